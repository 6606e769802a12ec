"""Lossless metadata stripping of kept originals: privacy data goes, pixels and colour stay."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageCms

from conftest import photo
from imgbatch.imaging import (
    CompressOptions,
    compress,
    strip_jpeg,
    strip_metadata,
    strip_png,
    strip_webp,
)

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0110] = "SecretCam 3000"  # Model
    exif[0x0112] = orientation
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 29.0)  # GPSLatitude
    return exif


def save(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGBA").tobytes()


def test_jpeg_loses_exif_and_comments_keeps_icc_and_pixels() -> None:
    original = save(
        photo(160, 120),
        "JPEG",
        quality=80,
        exif=exif_with_gps(),
        icc_profile=SRGB,
        comment=b"secret",
    )
    stripped = strip_jpeg(original)
    assert len(stripped) < len(original)
    with Image.open(io.BytesIO(stripped)) as img:
        assert not img.getexif()
        assert "comment" not in img.info
        assert img.info.get("icc_profile") == SRGB
    assert pixels(stripped) == pixels(original)


def test_png_loses_text_and_exif_keeps_transparency_and_icc() -> None:
    from PIL import PngImagePlugin

    img = photo(64, 48).convert("RGBA")
    img.putalpha(128)
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "someone@example.com")
    info.add_itxt("Location", "home", zip=True)
    original = save(img, "PNG", pnginfo=info, exif=exif_with_gps(), icc_profile=SRGB)
    stripped = strip_png(original)
    assert len(stripped) < len(original)
    with Image.open(io.BytesIO(stripped)) as out:
        assert "Author" not in out.info and "Location" not in out.info
        assert not out.getexif()
        assert out.info.get("icc_profile") == SRGB
    assert pixels(stripped) == pixels(original)


def test_webp_loses_exif_and_xmp_and_clears_their_flags() -> None:
    original = save(
        photo(64, 48), "WEBP", quality=80, exif=exif_with_gps(), xmp=b"<x:xmpmeta>gps</x:xmpmeta>"
    )
    stripped = strip_webp(original)
    assert len(stripped) < len(original)
    assert b"EXIF" not in stripped and b"XMP " not in stripped
    assert stripped[20] & 0x0C == 0  # VP8X flags
    assert int.from_bytes(stripped[4:8], "little") == len(stripped) - 8
    with Image.open(io.BytesIO(stripped)) as out:
        assert not out.getexif()
    assert pixels(stripped) == pixels(original)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "gif"])
def test_garbage_and_truncated_input_come_back_unchanged(fmt: str) -> None:
    for data in (
        b"",
        b"not an image at all",
        b"\xff\xd8\xff\xe1\xff\xff",
        b"\x89PNG\r\n\x1a\n\x00\x00\xff\xffIHDR",
    ):
        assert strip_metadata(data, fmt) == data


def test_kept_original_has_no_gps_but_keeps_its_pixels() -> None:
    # A small, already heavily compressed JPEG: re-encoding at quality 95 cannot shrink it.
    original = save(photo(96, 64), "JPEG", quality=10, exif=exif_with_gps())
    result = compress(original, CompressOptions(quality=95))
    assert result.kept_original
    assert result.bytes_out < len(original)
    with Image.open(io.BytesIO(result.data)) as img:
        assert not img.getexif()
    assert pixels(result.data) == pixels(original)


def test_kept_original_that_needs_its_orientation_keeps_its_exif() -> None:
    original = save(photo(96, 64), "JPEG", quality=10, exif=exif_with_gps(orientation=6))
    result = compress(original, CompressOptions(quality=95))
    assert result.kept_original
    assert result.data == original  # stripping would turn it sideways
    assert (result.width, result.height) == (64, 96)
