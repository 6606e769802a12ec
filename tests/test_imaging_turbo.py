"""imaging.turbo: the JPEG -> JPEG fast path, its rule, and that it keeps the guarantees.

The rule (`general_reason`, `route`, `applies`) is tested as pure functions on header
facts; the outputs through `compress` on real photographs; each case the fast path does
not cover is shown to take the general (Pillow) path.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import skimage.data
from PIL import ExifTags, Image, ImageCms
from skimage.metrics import structural_similarity

from imgbatch.imaging import CompressOptions, compress, jpegfacts, turbo
from imgbatch.imaging.jpegfacts import UNREADABLE, Component, JpegFacts

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>secret-xmp</rdf:RDF></x:xmpmeta>'


def encode(im: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", **params)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def ssim(a: bytes, b: bytes) -> float:
    x, y = (np.asarray(decode(d).convert("RGB")) for d in (a, b))
    return float(structural_similarity(x, y, channel_axis=2, data_range=255))


def exif(orientation: int | None = None) -> Image.Exif:
    tags = Image.Exif()
    tags[ExifTags.Base.Make] = "AcmeCam"
    if orientation is not None:
        tags[ExifTags.Base.Orientation] = orientation
    return tags


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photograph, not square (451x300), so rotations show."""
    return Image.fromarray(skimage.data.chelsea())


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture(params=["pixels", "dct"] if turbo.dct_available() else ["pixels"])
def fast_route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each fast route this install has; `pixels` is forced by hiding the extension."""
    if request.param == "pixels":
        monkeypatch.setattr(turbo, "_jpegdct", None)
    return str(request.param)


# --- the rule, pure ------------------------------------------------------------

YCC_420 = JpegFacts(
    frame=0xC0,
    precision=8,
    width=800,
    height=600,
    components=(Component(1, 2, 2, 0), Component(2, 1, 1, 1), Component(3, 1, 1, 1)),
    jfif=True,
)


def sampled(*factors: tuple[int, int]) -> tuple[Component, ...]:
    return tuple(Component(i + 1, h, v, min(i, 1)) for i, (h, v) in enumerate(factors))


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (replace(YCC_420, frame=0xC3), "frame"),  # lossless
        (replace(YCC_420, frame=0xC9), "frame"),  # arithmetic-coded
        (replace(YCC_420, frame=0xC5), "frame"),  # hierarchical
        (replace(YCC_420, precision=12), "precision"),
        (replace(YCC_420, height=0), "size"),  # height given later by DNL
        (replace(YCC_420, orientation=6), "orientation"),
        (replace(YCC_420, orientation=3), "orientation"),
        (replace(YCC_420, orientation=UNREADABLE), "orientation"),
        (replace(YCC_420, components=sampled((1, 1), (1, 1), (1, 1), (1, 1))), "colour"),  # CMYK
        (replace(YCC_420, adobe_transform=0), "colour"),  # Adobe RGB-coded
        (replace(YCC_420, components=tuple(Component(i, 1, 1, 0) for i in b"RGB")), "colour"),
        (replace(YCC_420, components=sampled((1, 1), (1, 1))), "colour"),  # two components
        (replace(YCC_420, components=sampled((4, 1), (1, 1), (1, 1))), "sampling"),  # 4:1:1
        (replace(YCC_420, components=sampled((2, 2), (2, 1), (1, 1))), "sampling"),
        (replace(YCC_420, components=sampled((1, 1), (2, 2), (2, 2))), "sampling"),
        (replace(YCC_420, components=sampled((4, 2), (1, 1), (1, 1))), "sampling"),
    ],
)
def test_what_takes_the_general_path(facts: JpegFacts, reason: str) -> None:
    assert turbo.general_reason(facts) == reason
    assert turbo.route(facts, dct_available=True) == turbo.GENERAL
    assert turbo.route(facts, dct_available=False) == turbo.GENERAL


@pytest.mark.parametrize(
    ("facts", "with_dct"),
    [
        (YCC_420, turbo.DCT),
        (replace(YCC_420, frame=0xC2), turbo.DCT),  # progressive
        (replace(YCC_420, frame=0xC1), turbo.DCT),  # extended sequential, 8-bit
        (replace(YCC_420, orientation=1, adobe_transform=1), turbo.DCT),
        (replace(YCC_420, components=sampled((1, 1))), turbo.DCT),  # greyscale
        (replace(YCC_420, components=sampled((1, 1), (1, 1), (1, 1))), turbo.PIXELS),  # 4:4:4
        (replace(YCC_420, components=sampled((2, 1), (1, 1), (1, 1))), turbo.PIXELS),  # 4:2:2
        (replace(YCC_420, components=sampled((1, 2), (1, 1), (1, 1))), turbo.PIXELS),  # 4:4:0
    ],
)
def test_the_fast_routes(facts: JpegFacts, with_dct: str) -> None:
    """Coefficients only where the output sampling is what the general path makes (4:2:0,
    grey); other standard samplings through pixels, which resamples to 4:2:0."""
    assert turbo.general_reason(facts) is None
    assert turbo.route(facts, dct_available=True) == with_dct
    assert turbo.route(facts, dct_available=False) == turbo.PIXELS


@pytest.mark.parametrize(
    ("source", "target", "quality", "resize", "expected"),
    [
        ("jpeg", "keep", 50, False, True),
        ("jpeg", "jpeg", 80, False, True),
        ("jpeg", "webp", 50, False, False),
        ("jpeg", "png", 50, False, False),
        ("png", "jpeg", 50, False, False),
        ("webp", "keep", 50, False, False),
        ("jpeg", "keep", 50, True, False),  # resizing is the general path's
        ("jpeg", "keep", "auto", False, True),  # searched on luma, then this path (`autojpeg`)
        ("jpeg", "webp", "auto", False, False),
        ("jpeg", "keep", "auto", True, False),
        ("jpeg", "keep", True, False, False),
        ("jpeg", "keep", None, False, False),
    ],
)
def test_applies_only_to_jpeg_out_without_resize(
    source: str, target: str, quality: object, resize: bool, expected: bool
) -> None:
    assert turbo.applies(source, target, quality, resize) is expected


def test_target_tables_are_libjpegs() -> None:
    luma, chroma = turbo.target_tables(50)
    assert luma[:8] == (16, 11, 10, 16, 24, 40, 51, 61) and chroma[:4] == (17, 18, 24, 47)
    assert turbo.target_tables(100) == ((1,) * 64, (1,) * 64)
    assert max(turbo.target_tables(1)[0]) == 255  # baseline: 8-bit quantizers
    # The tables Pillow (libjpeg's jpeg_set_quality) writes at the same quality.
    for quality in (10, 50, 75, 90):
        facts = jpegfacts.parse(encode(Image.new("RGB", (16, 16)), quality=quality))
        assert (facts.tables[0], facts.tables[1]) == turbo.target_tables(quality)


def test_requantized_table_keeps_what_is_already_coarser() -> None:
    assert turbo.requantized_table((2, 30, 99), (16, 11, 99)) == (16, 30, 99)


# --- the header facts ----------------------------------------------------------


def test_facts_of_real_files(photo: Image.Image, srgb_icc: bytes) -> None:
    data = encode(photo, quality=90, exif=exif(1), icc_profile=srgb_icc, progressive=True)
    facts = jpegfacts.parse(data)
    assert (facts.frame, facts.precision, facts.width, facts.height) == (0xC2, 8, 451, 300)
    assert [(c.h, c.v) for c in facts.components] == [(2, 2), (1, 1), (1, 1)]
    assert facts.orientation == 1 and facts.jfif
    assert facts.icc_profile == srgb_icc and facts.icc_space == "RGB"
    assert jpegfacts.parse(encode(photo, subsampling=0)).components[0].h == 1
    assert len(jpegfacts.parse(encode(photo.convert("L"))).components) == 1
    cmyk = jpegfacts.parse(encode(photo.convert("CMYK")))
    assert len(cmyk.components) == 4 and cmyk.adobe_transform is not None
    assert jpegfacts.parse(encode(photo, exif=exif(8))).orientation == 8
    assert jpegfacts.parse(encode(photo)).orientation is None


def test_icc_profile_in_several_chunks_is_reassembled(photo: Image.Image) -> None:
    big = bytes(16) + b"RGB " + bytes(range(256)) * 400  # > one 64 KiB segment
    facts = jpegfacts.parse(encode(photo, icc_profile=big))
    assert len(facts.icc_segments) == 2 and facts.icc_profile == big


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xda"],
    ids=["empty", "soi-only", "cut-segment", "png", "scan-before-frame"],
)
def test_unreadable_headers_are_refused(data: bytes) -> None:
    with pytest.raises(jpegfacts.NotParsed):
        jpegfacts.parse(data)
    assert turbo.compress_jpeg(data, 50, 10**8) is None


def test_unreadable_exif_is_not_taken_for_upright(photo: Image.Image) -> None:
    broken = b"\xff\xe1\x00\x0cExif\x00\x00XX\x00\x00"  # byte order "XX"
    data = encode(photo)
    data = data[:2] + broken + data[2:]
    assert jpegfacts.parse(data).orientation == UNREADABLE
    assert turbo.compress_jpeg(data, 50, 10**8) is None


# --- outputs -------------------------------------------------------------------


def test_fast_output_is_a_smaller_jpeg_of_the_same_picture(
    photo: Image.Image, fast_route: str
) -> None:
    data = encode(photo, quality=92)
    fast = turbo.compress_jpeg(data, 50, 10**8)
    assert fast is not None and fast.route == fast_route and not fast.kept_original
    result = compress(data)
    assert result.data == fast.data  # compress took the fast path
    assert (result.format, result.width, result.height, result.quality) == ("jpeg", 451, 300, 50)
    assert result.bytes_out == len(result.data) < len(data) // 2
    out = decode(result.data)
    assert out.format == "JPEG" and out.size == (451, 300) and out.mode == "RGB"
    assert ssim(data, result.data) > 0.9


def test_metadata_is_stripped_and_the_icc_profile_kept(
    photo: Image.Image, srgb_icc: bytes, fast_route: str
) -> None:
    data = encode(
        photo, quality=95, exif=exif(1), icc_profile=srgb_icc, xmp=XMP, comment=b"secret-comment"
    )
    assert b"AcmeCam" in data and b"secret-xmp" in data and b"secret-comment" in data
    fast = turbo.compress_jpeg(data, 50, 10**8)
    assert fast is not None and fast.route == fast_route
    out = decode(fast.data)
    assert out.info.get("icc_profile") == srgb_icc
    assert (
        jpegfacts.parse(fast.data).icc_segments == jpegfacts.parse(data).icc_segments
    )  # as they were
    for secret in (b"AcmeCam", b"secret-xmp", b"secret-comment", b"Exif\x00\x00"):
        assert secret not in fast.data


def test_a_profile_that_does_not_describe_the_pixels_is_dropped(
    photo: Image.Image, fast_route: str
) -> None:
    grey_icc = bytes(16) + b"GRAY" + bytes(108)
    data = encode(photo, quality=95, icc_profile=grey_icc)  # a grey profile on a colour JPEG
    fast = turbo.compress_jpeg(data, 50, 10**8)
    assert fast is not None and b"ICC_PROFILE" not in fast.data
    grey = encode(photo.convert("L"), quality=95, icc_profile=grey_icc)
    fast = turbo.compress_jpeg(grey, 50, 10**8)
    assert fast is not None and fast.route == fast_route
    assert decode(fast.data).mode == "L" and decode(fast.data).info["icc_profile"] == grey_icc


def test_never_larger_gives_back_the_input_stripped(photo: Image.Image, fast_route: str) -> None:
    # q10 with optimised Huffman tables: neither route's output (q50; or the same
    # coefficients with the standard tables) is smaller than this.
    data = encode(
        photo.resize((48, 32)), quality=10, optimize=True, exif=exif(1), comment=b"secret-comment"
    )
    fast = turbo.compress_jpeg(data, 50, 10**8)
    assert fast is not None and fast.kept_original and len(fast.data) < len(data)
    assert b"secret-comment" not in fast.data and b"AcmeCam" not in fast.data
    result = compress(data)
    assert result.kept_original and result.quality is None and result.data == fast.data


def test_same_quality_as_the_general_path_at_the_same_size(fast_route: str) -> None:
    """On a real photo (q90, 4:2:0, 2 MP-like detail): the fast route's SSIM is at least
    the general path's, for no more bytes (pixels: the same codec, so within noise)."""
    data = encode(Image.fromarray(skimage.data.astronaut()), quality=90)
    fast = turbo.compress_jpeg(data, 50, 10**8)
    assert fast is not None and fast.route == fast_route
    pillow = encode(decode(data), quality=50)  # what the general path encodes
    assert len(fast.data) <= len(pillow) * 1.01
    assert ssim(data, fast.data) >= ssim(data, pillow) - 0.0005


def test_grey_jpeg(photo: Image.Image, fast_route: str) -> None:
    data = encode(photo.convert("L"), quality=95)
    fast = turbo.compress_jpeg(data, 50, 10**8)
    assert fast is not None and fast.route == fast_route and not fast.kept_original
    assert decode(fast.data).mode == "L" and len(fast.data) < len(data)


# --- what takes the general path, shown on real files ----------------------------


def test_exif_rotation_takes_the_general_path(photo: Image.Image) -> None:
    data = encode(photo, quality=95, exif=exif(6))
    assert turbo.compress_jpeg(data, 50, 10**8) is None
    result = compress(data)
    assert (result.width, result.height) == (300, 451)  # rotated by the general path


def test_cmyk_takes_the_general_path(photo: Image.Image) -> None:
    data = encode(photo.convert("CMYK"), quality=95)
    assert turbo.general_reason(jpegfacts.parse(data)) == "colour"
    assert turbo.compress_jpeg(data, 50, 10**8) is None
    assert decode(compress(data).data).mode == "RGB"


def test_rgb_coded_jpeg_takes_the_general_path(photo: Image.Image) -> None:
    data = encode(photo, quality=95, keep_rgb=True, subsampling=0)
    assert turbo.general_reason(jpegfacts.parse(data)) == "colour"
    assert turbo.compress_jpeg(data, 50, 10**8) is None


def with_frame_byte(data: bytes, offset: int, value: int) -> bytes:
    """`data` with one byte of its frame header (after the SOF length) changed."""
    pos = 2
    while data[pos + 1] not in jpegfacts.SOF_MARKERS:
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    patched = bytearray(data)
    if offset < 0:
        patched[pos + 1] = value  # the marker itself
    else:
        patched[pos + 4 + offset] = value
    return bytes(patched)


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (0, 12, "precision"),  # 12-bit samples
        (-1, 0xC9, "frame"),  # arithmetic coding
        (-1, 0xC3, "frame"),  # lossless
        (1 + 4 + 1 + 3 + 1, 0x22, "sampling"),  # Cb sampled 2x2 like Y: an odd layout
    ],
    ids=["12-bit", "arithmetic", "lossless", "odd-sampling"],
)
def test_odd_frames_take_the_general_path(
    photo: Image.Image, offset: int, value: int, reason: str
) -> None:
    data = with_frame_byte(encode(photo, quality=95), offset, value)
    assert turbo.general_reason(jpegfacts.parse(data)) == reason
    assert turbo.compress_jpeg(data, 50, 10**8) is None


def test_too_many_pixels_is_left_to_the_general_path(photo: Image.Image) -> None:
    data = encode(photo)
    assert turbo.compress_jpeg(data, 50, 451 * 300 - 1) is None
    assert turbo.compress_jpeg(data, 50, 451 * 300) is not None


def test_a_truncated_jpeg_takes_the_general_path(photo: Image.Image, fast_route: str) -> None:
    data = encode(photo, quality=95)
    assert turbo.compress_jpeg(data[: len(data) * 2 // 3], 50, 10**8) is None


def test_other_targets_do_not_take_the_fast_path(photo: Image.Image) -> None:
    data = encode(photo, quality=95)
    assert compress(data, CompressOptions(format="webp")).format == "webp"
    assert compress(data, CompressOptions(format="png")).kept_original


def test_the_fast_path_can_be_switched_off(
    photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encode(photo, quality=95)
    fast = turbo.compress_jpeg(data, 50, 10**8)
    assert fast is not None and compress(data).data == fast.data

    def refuse(*args: object) -> None:
        raise AssertionError("the fast path ran")

    monkeypatch.setattr(turbo, "compress_jpeg", refuse)
    general = compress(data, CompressOptions(jpeg_fast_path=False))
    assert general.format == "jpeg" and general.quality == 50 and len(general.data) < len(data)
