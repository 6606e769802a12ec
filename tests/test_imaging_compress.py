"""imaging.compress: formats in and out, metadata, limits, refusals, never larger."""

from __future__ import annotations

import io
import random
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
import skimage.data
from PIL import (
    AvifImagePlugin,
    ExifTags,
    Image,
    ImageCms,
    ImageDraw,
    ImageFile,
    ImageOps,
    PngImagePlugin,
)

from imgbatch import imaging
from imgbatch.errors import ImageFailure
from imgbatch.imaging import CompressOptions, compress, sniff_format

# --- building images -----------------------------------------------------------


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def pixels(im: Image.Image, mode: str = "RGB") -> np.ndarray:
    return np.asarray(im.convert(mode), dtype=np.float32)


def mean_abs_diff(a: Image.Image, b: Image.Image, mode: str = "RGB") -> float:
    return float(np.abs(pixels(a, mode) - pixels(b, mode)).mean())


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photograph, not square (451x300), so rotations show."""
    return Image.fromarray(skimage.data.chelsea())


@pytest.fixture(scope="module")
def graphic_rgba(photo: Image.Image) -> Image.Image:
    """A product cut-out: the photo inside an anti-aliased ellipse, transparent around it."""
    w, h = photo.size
    mask = Image.new("L", (w * 4, h * 4), 0)
    ImageDraw.Draw(mask).ellipse((w * 0.4, h * 0.4, w * 3.6, h * 3.6), fill=255)
    im = photo.convert("RGBA")
    im.putalpha(mask.resize((w, h), Image.Resampling.LANCZOS))
    return im


def alpha_of(im: Image.Image) -> np.ndarray:
    return pixels(im, "RGBA")[..., 3]


@pytest.fixture(scope="module")
def sources(photo: Image.Image) -> dict[str, bytes]:
    return {
        "jpeg": encode(photo, "JPEG", quality=95),
        "png": encode(photo, "PNG"),
        "webp": encode(photo, "WEBP", quality=95),
        "gif": encode(photo, "GIF"),
        "avif": encode(photo, "AVIF", quality=95, speed=9),
    }


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose IHDR claims width x height."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 120, 30)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b";"


def webp_claiming(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any pixel data would be decoded."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoding started")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "load", refuse)


def failure(data: bytes, options: CompressOptions = CompressOptions()) -> ImageFailure:
    with pytest.raises(ImageFailure) as info:
        compress(data, options)
    return info.value


# --- sniffing --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", imaging.FORMATS)
def test_sniff_names_each_allowed_format(sources: dict[str, bytes], fmt: str) -> None:
    assert sniff_format(sources[fmt]) == fmt


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, world\n",
        b"<!DOCTYPE html><html><body><img src=x></body></html>",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
        b"II*\x00\x08\x00\x00\x00",
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
        b"%PDF-1.7\n",
    ],
)
def test_sniff_refuses_everything_else(data: bytes) -> None:
    assert sniff_format(data) is None


# --- each format in and out -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [
        ("jpeg", "image/jpeg", "jpg"),
        ("png", "image/png", "png"),
        ("webp", "image/webp", "webp"),
        ("avif", "image/avif", "avif"),
    ],
)
def test_each_format_is_recompressed_in_its_own_format(
    sources: dict[str, bytes], photo: Image.Image, fmt: str, content_type: str, extension: str
) -> None:
    data = sources[fmt]
    result = compress(data)
    assert (result.format, result.content_type, result.extension) == (fmt, content_type, extension)
    assert not result.kept_original
    assert (result.width, result.height) == photo.size
    assert result.bytes_in == len(data)
    assert result.bytes_out == len(result.data) < len(data)
    out = decode(result.data)
    assert out.format == fmt.upper() and out.size == photo.size
    assert mean_abs_diff(out, photo) < 12  # still the same picture


def test_gif_is_recompressed_as_gif(photo: Image.Image) -> None:
    # A GIF written without palette optimisation shrinks when re-encoded.
    data = encode(photo.convert("P"), "GIF", optimize=False) + b"\x00" * 4096
    result = compress(data)
    assert (result.format, result.extension, result.kept_original) == ("gif", "gif", False)
    assert result.bytes_out < result.bytes_in
    assert mean_abs_diff(decode(result.data), decode(data)) < 1


def test_progressive_and_grey_jpeg_inputs(photo: Image.Image) -> None:
    progressive = compress(encode(photo, "JPEG", quality=95, progressive=True))
    assert progressive.format == "jpeg" and not progressive.kept_original
    grey = compress(encode(photo.convert("L"), "JPEG", quality=95))
    assert decode(grey.data).mode == "L"


def test_rgba_png_keeps_transparency(graphic_rgba: Image.Image) -> None:
    data = encode(graphic_rgba, "PNG")
    result = compress(data)
    assert result.format == "png" and not result.kept_original
    out = decode(result.data)
    assert out.mode == "P"  # quantized to a palette
    alpha_in, alpha_out = alpha_of(graphic_rgba), alpha_of(out)
    assert (alpha_out[alpha_in == 0] == 0).all()  # the background stays fully transparent
    opaque = alpha_out[alpha_in == 255]
    assert (opaque == 255).mean() > 0.999 and opaque.min() >= 192  # the product stays solid
    assert np.abs(alpha_out - alpha_in).mean() < 1
    inside = alpha_in == 255
    rgb_out, rgb_in = pixels(out, "RGBA")[..., :3], pixels(graphic_rgba, "RGBA")[..., :3]
    assert np.abs(rgb_out[inside] - rgb_in[inside]).mean() < 8


def test_opaque_alpha_is_dropped(photo: Image.Image) -> None:
    data = encode(photo.convert("RGBA"), "PNG")
    assert decode(compress(data, CompressOptions(format="avif")).data).mode == "RGB"
    palette = decode(compress(data).data)
    assert palette.mode == "P" and not palette.has_transparency_data


@pytest.mark.parametrize("target", ["webp", "avif", "jpeg"])
def test_keep_to_other_format(sources: dict[str, bytes], photo: Image.Image, target: str) -> None:
    result = compress(sources["jpeg"], CompressOptions(format=target))
    assert result.format == target and result.content_type == f"image/{target}"
    out = decode(result.data)
    assert out.format == target.upper() and out.size == photo.size
    assert mean_abs_diff(out, photo) < 12


@pytest.mark.parametrize("target", ["webp", "avif"])
def test_alpha_survives_conversion(graphic_rgba: Image.Image, target: str) -> None:
    result = compress(encode(graphic_rgba, "PNG"), CompressOptions(format=target, quality=80))
    assert result.format == target
    alpha = alpha_of(decode(result.data))
    assert alpha[:20, :20].max() <= 8 and alpha[120:180, 200:250].min() >= 247
    assert np.abs(alpha - alpha_of(graphic_rgba)).mean() < 3


def test_jpeg_from_alpha_flattens_onto_white(graphic_rgba: Image.Image) -> None:
    result = compress(encode(graphic_rgba, "PNG"), CompressOptions(format="jpeg", quality=90))
    out = decode(result.data)
    assert result.format == "jpeg" and out.mode == "RGB"
    assert pixels(out)[:20, :20].min() > 245  # transparent pixels became white, not black
    centre = (slice(120, 180), slice(200, 250))
    assert np.abs(pixels(out)[centre] - pixels(graphic_rgba)[centre]).mean() < 8


def test_keep_to_png_from_a_graphic(graphic_rgba: Image.Image) -> None:
    gif = encode(graphic_rgba.convert("RGB"), "GIF")
    result = compress(gif, CompressOptions(format="png"))
    assert (result.format, result.extension, result.kept_original) == ("png", "png", False)
    assert result.bytes_out < len(gif)
    assert mean_abs_diff(decode(result.data), decode(gif)) == 0  # palette kept losslessly


def test_png_of_a_photo_keeps_the_smaller_jpeg(sources: dict[str, bytes]) -> None:
    result = compress(sources["jpeg"], CompressOptions(format="png"))
    assert result.kept_original and result.data == sources["jpeg"]
    assert (result.format, result.content_type, result.extension) == ("jpeg", "image/jpeg", "jpg")


def test_quality_100_png_is_lossless(graphic_rgba: Image.Image) -> None:
    data = encode(graphic_rgba, "PNG", compress_level=1)
    result = compress(data, CompressOptions(quality=100))
    assert result.format == "png" and not result.kept_original
    assert mean_abs_diff(decode(result.data), graphic_rgba, "RGBA") == 0


def test_target_too_wide_for_webp_falls_back_to_source_format() -> None:
    wide = Image.fromarray(np.tile(skimage.data.chelsea()[:8], (1, 40, 1)))  # 18040 x 8
    result = compress(encode(wide, "JPEG", quality=95), CompressOptions(format="webp"))
    assert result.format == "jpeg" and (result.width, result.height) == wide.size


# --- orientation and metadata -------------------------------------------------------


def exif_with(orientation: int | None = None, gps: bool = False) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "AcmeCam"
    exif[ExifTags.Base.Model] = "Snapper 9000"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    if gps:
        exif[ExifTags.Base.GPSInfo] = {
            ExifTags.GPS.GPSLatitudeRef: "N",
            ExifTags.GPS.GPSLatitude: (48.0, 51.0, 29.0),
            ExifTags.GPS.GPSLongitudeRef: "E",
            ExifTags.GPS.GPSLongitude: (2.0, 17.0, 40.0),
        }
    return exif


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_is_applied(photo: Image.Image, orientation: int) -> None:
    data = encode(photo, "JPEG", quality=95, exif=exif_with(orientation))
    result = compress(data)
    out = decode(result.data)
    expected = ImageOps.exif_transpose(decode(data))
    assert out.size == expected.size == (result.width, result.height)
    if orientation >= 5:
        assert out.size == (photo.height, photo.width)
    assert mean_abs_diff(out, expected) < 6
    assert ExifTags.Base.Orientation not in out.getexif()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_orientation_6_in_other_formats(photo: Image.Image, fmt: str) -> None:
    result = compress(encode(photo, fmt, exif=exif_with(6)))
    out = decode(result.data)
    assert out.size == (photo.height, photo.width)
    assert mean_abs_diff(out, photo.transpose(Image.Transpose.ROTATE_270)) < 12
    assert len(out.getexif()) == 0


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>secret-xmp</rdf:RDF></x:xmpmeta>'


@pytest.mark.parametrize(
    ("source", "target"),
    [("JPEG", "keep"), ("JPEG", "webp"), ("JPEG", "avif"), ("PNG", "keep"), ("WEBP", "keep")],
)
def test_metadata_is_stripped_and_icc_kept(
    photo: Image.Image, srgb_icc: bytes, source: str, target: str
) -> None:
    extra: dict[str, object] = {"quality": 95, "xmp": XMP}
    if source == "JPEG":
        extra["comment"] = b"secret-comment"
    if source == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_itxt("XML:com.adobe.xmp", XMP.decode())
        text.add_text("Comment", "secret-comment")
        extra = {"pnginfo": text}
    data = encode(photo, source, exif=exif_with(gps=True), icc_profile=srgb_icc, **extra)
    assert b"AcmeCam" in data and b"secret-xmp" in data  # the fixture does carry them
    result = compress(data, CompressOptions(format=target, quality=20))
    assert not result.kept_original
    out = decode(result.data)
    assert out.info.get("icc_profile") == srgb_icc
    assert len(out.getexif()) == 0
    assert "exif" not in out.info and "xmp" not in out.info and "comment" not in out.info
    for secret in (b"AcmeCam", b"Snapper", b"secret-xmp", b"secret-comment", b"Exif\x00\x00"):
        assert secret not in result.data


def test_png_text_chunks_are_stripped(graphic_rgba: Image.Image) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "secret-author")
    info.add_itxt("Description", "secret-description", zip=True)
    result = compress(encode(graphic_rgba, "PNG", pnginfo=info, exif=exif_with(gps=True)))
    assert b"secret" not in result.data and b"AcmeCam" not in result.data
    assert getattr(decode(result.data), "text", None) == {}


def test_corrupt_exif_is_dropped_not_fatal(photo: Image.Image) -> None:
    bad_app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + 20) + b"Exif\x00\x00" + b"MM\x00*\xff" * 4
    data = encode(photo, "JPEG", quality=95)
    data = data[:2] + bad_app1 + data[2:]
    # Pillow warns about corrupt EXIF; production keeps the default warning filters
    # (this suite turns warnings into errors, which would make it corrupt_image).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = compress(data)
    assert result.format == "jpeg" and b"Exif" not in result.data


# --- never larger ------------------------------------------------------------------


def test_tiny_compressed_jpeg_is_kept_as_is(photo: Image.Image) -> None:
    data = encode(photo.resize((48, 32)), "JPEG", quality=10)
    result = compress(data, CompressOptions(quality=90))
    assert result.kept_original
    assert result.data == data and result.bytes_out == result.bytes_in == len(data)
    assert (result.format, result.width, result.height) == ("jpeg", 48, 32)


@pytest.mark.parametrize("fmt", imaging.FORMATS)
@pytest.mark.parametrize("quality", [1, 50, 100])
def test_output_is_never_larger(sources: dict[str, bytes], fmt: str, quality: int) -> None:
    for target in imaging.TARGETS:
        result = compress(sources[fmt], CompressOptions(quality=quality, format=target))
        assert result.bytes_out <= result.bytes_in
        if result.kept_original:
            assert result.data == sources[fmt] and result.format == fmt


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
def test_quality_affects_size(sources: dict[str, bytes], fmt: str) -> None:
    low = compress(sources[fmt], CompressOptions(quality=20))
    high = compress(sources[fmt], CompressOptions(quality=80))
    assert not low.kept_original and not high.kept_original
    assert low.bytes_out < high.bytes_out


# --- limits before work ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        png_claiming(100_000, 100_000),
        jpeg_claiming(60_000, 60_000),
        gif_claiming(65_535, 65_535),
        webp_claiming(16_000, 16_000),
        png_claiming(8_000, 8_000),  # 64 MP: over our 50 MP, under Pillow's own guard
    ],
    ids=["png", "jpeg", "gif", "webp", "png-64mp"],
)
def test_huge_header_is_refused_before_opening(
    data: bytes, no_decoding: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow was asked to open it")

    monkeypatch.setattr(Image, "open", no_open)
    assert len(data) < 1000
    started = time.perf_counter()
    assert failure(data).code == "too_many_pixels"
    assert time.perf_counter() - started < 0.5


def test_header_check_skips_what_app_segments_carry(photo: Image.Image) -> None:
    fake_sof = b"\xff\xc0\x00\x11\x08\xff\xf0\xff\xf0\x03" + bytes(9)  # 65520 x 65520
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + len(fake_sof)) + fake_sof
    data = encode(photo, "JPEG", quality=95)
    result = compress(data[:2] + app1 + data[2:])
    assert (result.width, result.height) == photo.size


def test_pixel_limit_from_pillow_header_before_decoding(
    sources: dict[str, bytes], no_decoding: None
) -> None:
    # AVIF has no pre-check of ours: Pillow parses the header, we refuse before load().
    assert failure(sources["avif"], CompressOptions(max_pixels=10_000)).code == "too_many_pixels"


def test_pixel_limit_is_inclusive(photo: Image.Image) -> None:
    data = encode(photo, "JPEG", quality=95)
    pixels_ = photo.width * photo.height
    assert compress(data, CompressOptions(max_pixels=pixels_)).width == photo.width
    assert failure(data, CompressOptions(max_pixels=pixels_ - 1)).code == "too_many_pixels"


def test_pillow_decompression_bomb_guard_is_mapped(no_decoding: None) -> None:
    huge = CompressOptions(max_pixels=10**12)  # our limit off: Pillow's guard fires
    assert failure(png_claiming(20_000, 20_000), huge).code == "too_many_pixels"  # error
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert failure(png_claiming(10_000, 10_000), huge).code == "too_many_pixels"  # warning


# --- refusals and corruption ----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"just some text\n",
        b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not found</body></html>",
        b'{"error": "not found"}',
        b"BMW 320d, 2014, silver",  # "BM" but not a bitmap header
        bytes(random.Random(7).randbytes(2048)),
    ],
    ids=["empty", "text", "html", "json", "bm-text", "random"],
)
def test_not_an_image(data: bytes) -> None:
    assert failure(data).code == "not_an_image"


@pytest.mark.parametrize("kind", ["TIFF", "BMP", "PDF", "SVG", "SVG-doctype", "HEIC"])
def test_real_but_unsupported_formats(photo: Image.Image, kind: str) -> None:
    data = {
        "TIFF": lambda: encode(photo, "TIFF"),
        "BMP": lambda: encode(photo, "BMP"),
        "PDF": lambda: encode(photo, "PDF"),
        "SVG": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10"><rect/></svg>',
        "SVG-doctype": lambda: (
            b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- made by hand -->\n'
            b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd">\n<svg>'
        ),
        "HEIC": lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
    }[kind]()
    error = failure(data)
    assert error.code == "unsupported_format"
    assert {"HEIC": "HEIF"}.get(kind, kind.split("-")[0]) in error.message


@pytest.mark.parametrize("fmt", imaging.FORMATS)
def test_truncated_file_is_corrupt(sources: dict[str, bytes], fmt: str) -> None:
    data = sources[fmt]
    assert failure(data[: len(data) * 2 // 3]).code == "corrupt_image"


@pytest.mark.parametrize(
    "magic",
    [
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0",
        b"GIF89a\x20\x00\x20\x00",  # a 32x32 screen, then garbage
        b"RIFF\x00\x01\x00\x00WEBP",
        b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
    ],
    ids=["png", "jpeg", "gif", "webp", "avif"],
)
def test_image_magic_followed_by_garbage_is_corrupt(magic: bytes) -> None:
    garbage = random.Random(3).randbytes(4096)
    assert failure(magic + garbage).code == "corrupt_image"


@pytest.mark.parametrize("fmt", imaging.FORMATS)
def test_mangled_files_only_ever_raise_image_failure(sources: dict[str, bytes], fmt: str) -> None:
    rng = random.Random(fmt)
    original = sources[fmt]
    codes = set()
    for _ in range(25):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(16, len(data))] = rng.randrange(256)
        try:
            result = compress(bytes(data))
        except ImageFailure as error:
            codes.add(error.code)
        else:
            assert result.bytes_out <= len(data)
    assert codes <= {"corrupt_image", "too_many_pixels"}


# --- modes ---------------------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb(photo: Image.Image) -> None:
    data = encode(photo.convert("CMYK"), "JPEG", quality=95)
    assert decode(data).mode == "CMYK"
    for target in ("keep", "webp", "png"):
        result = compress(data, CompressOptions(format=target, quality=80))
        out = decode(result.data)
        assert out.mode in ("RGB", "P") and not result.kept_original
        assert mean_abs_diff(out, photo) < 10  # colours right, not inverted


def test_cmyk_jpeg_with_a_broken_profile(photo: Image.Image) -> None:
    fake_icc = bytes(16) + b"CMYK" + bytes(108)  # says CMYK, cannot be parsed
    data = encode(photo.convert("CMYK"), "JPEG", quality=95, icc_profile=fake_icc)
    result = compress(data)
    out = decode(result.data)
    assert out.mode == "RGB" and "icc_profile" not in out.info
    assert mean_abs_diff(out, photo) < 10


@pytest.fixture(scope="module")
def sixteen_bit() -> np.ndarray:
    rng = np.random.default_rng(16)
    gradient = np.linspace(0, 60_000, 256 * 192).reshape(192, 256)
    return np.clip(gradient + rng.normal(0, 800, gradient.shape), 0, 65535).astype(np.uint16)


def test_16_bit_png_is_scaled_not_clipped(sixteen_bit: np.ndarray) -> None:
    data = encode(Image.fromarray(sixteen_bit), "PNG")
    assert decode(data).mode.startswith("I;16")
    expected = sixteen_bit.astype(np.float32) / 256
    for target in ("keep", "jpeg", "webp"):
        result = compress(data, CompressOptions(format=target, quality=90))
        out = pixels(decode(result.data), "L")
        assert not result.kept_original
        assert np.abs(out - expected).mean() < 4  # a plain convert("L") would be ~all 255


def test_palette_and_grey_pngs(photo: Image.Image) -> None:
    palette = encode(photo.convert("P"), "PNG", compress_level=1)
    result = compress(palette)
    assert result.format == "png" and decode(result.data).mode == "P"
    assert mean_abs_diff(decode(result.data), decode(palette)) == 0
    grey = compress(encode(photo.convert("LA"), "PNG"), CompressOptions(format="jpeg"))
    assert decode(grey.data).mode == "L"


def test_animated_gif_keeps_first_frame(photo: Image.Image) -> None:
    frames = [photo, ImageOps.invert(photo), photo.transpose(Image.Transpose.ROTATE_180)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    first = decode(data)  # frame 0 as Pillow decodes it
    for target in ("keep", "webp"):
        result = compress(data, CompressOptions(format=target))
        out = Image.open(io.BytesIO(result.data))
        assert not result.kept_original and getattr(out, "n_frames", 1) == 1
        assert mean_abs_diff(out, first) < (1 if target == "keep" else 12)
        assert mean_abs_diff(out, frames[1]) > 50  # not the inverted second frame


# --- options and setup ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"quality": 0}, {"quality": 101}, {"format": "gif"}, {"format": "tiff"}, {"max_pixels": 0}],
)
def test_bad_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CompressOptions(**kwargs)  # type: ignore[arg-type]


def test_configure_is_repeatable() -> None:
    before = Image.core.get_blocks_max(), AvifImagePlugin.DEFAULT_MAX_THREADS
    try:
        imaging.configure()
        imaging.configure()
        assert Image.core.get_blocks_max() == imaging.BLOCKS_MAX
        assert AvifImagePlugin.DEFAULT_MAX_THREADS == 1
    finally:
        Image.core.set_blocks_max(before[0])
        AvifImagePlugin.DEFAULT_MAX_THREADS = before[1]
