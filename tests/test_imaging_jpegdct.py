"""imaging._jpegdct, the optional DCT-domain accelerator, and the pixel route without it.

CI installs libjpeg-turbo's headers (scripts/system-packages.sh), so there the extension
must be built; the pixel route is tested by hiding the extension, in this process
(`test_imaging_turbo`'s `fast_route` fixture) and in a fresh interpreter below.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image
from skimage.metrics import structural_similarity

from imgbatch.imaging import compress, jpegfacts, turbo

HEADERS = Path(sysconfig.get_config_var("INCLUDEDIR") or "/usr/include") / "jpeglib.h"


def encode(im: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", **params)
    return out.getvalue()


def rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def psnr(a: bytes, b: bytes) -> float:
    error = np.mean((rgb(a).astype(np.float64) - rgb(b)) ** 2)
    return float(10 * np.log10(255**2 / error))


def ssim(a: bytes, b: bytes) -> float:
    return float(structural_similarity(rgb(a), rgb(b), channel_axis=2, data_range=255))


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut())


def test_the_extension_is_built_wherever_it_can_be() -> None:
    """In CI (headers installed) it must be there; elsewhere exactly when a compiler and
    the headers are, since setup.py builds it as optional."""
    buildable = shutil.which(os.environ.get("CC", "cc")) is not None and (
        HEADERS.exists() or Path("/usr/include/jpeglib.h").exists()
    )
    if os.environ.get("CI") == "true":
        assert buildable, "CI must install libjpeg62-turbo-dev (scripts/system-packages.sh)"
    assert turbo.dct_available() is buildable, (
        "reinstall (make install, or pip install -e .) to build imgbatch.imaging._jpegdct"
        if buildable
        else "built without a compiler and headers?"
    )


def test_without_the_extension_the_pixel_route_does_it(photo: Image.Image) -> None:
    """A fresh interpreter where the extension cannot be imported, as on an install
    without a compiler: the fast path still runs, by pixels, with the same guarantees."""
    data = encode(photo, quality=90)
    script = (
        "import sys\n"
        "sys.modules['imgbatch.imaging._jpegdct'] = None  # import fails\n"
        "from imgbatch.imaging import compress, turbo\n"
        "data = sys.stdin.buffer.read()\n"
        "assert not turbo.dct_available()\n"
        "fast = turbo.compress_jpeg(data, 50, 10**8)\n"
        "assert fast is not None and fast.route == 'pixels', fast\n"
        "assert compress(data).data == fast.data\n"
        "sys.stdout.buffer.write(fast.data)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.startswith(b"\xff\xd8") and len(done.stdout) < len(data) // 2
    assert ssim(data, done.stdout) > 0.9


# The tests below need the extension: CI builds it, and the first test says whether this
# install should have it, so they fail rather than pass vacuously where it is missing.


def requantize(data: bytes, quality: int = 50) -> bytes:
    from imgbatch.imaging import _jpegdct  # type: ignore[attr-defined]

    luma, chroma = turbo.target_tables(quality)
    return bytes(_jpegdct.requantize(data, luma, chroma))


def exact(c: int, old: int, new: int) -> int:
    """round(c * old / new), ties toward zero, in exact integers."""
    r = (2 * abs(c) * old + new - 1) // (2 * new)
    return -r if c < 0 else r


def test_the_arithmetic_is_exact() -> None:
    from imgbatch.imaging import _jpegdct  # type: ignore[attr-defined]

    rng = random.Random(17)
    pairs = [(old, new) for old in range(1, 256) for new in range(old, 256, 3)]
    pairs += [(300, 310), (1, 32767), (32767, 32767), (255, 256)]  # the wide path
    for old, new in pairs:
        coefs = [rng.randint(-2048, 2047) for _ in range(60)] + [32767, -32767, 0, 1]
        expected = [exact(c, old, new) for c in coefs]
        assert _jpegdct.requantize_values(coefs, [old] * 64, [new] * 64) == expected, (old, new)
    # Exact ties, both signs: c * old = (k + 1/2) * new.
    for new in range(2, 256, 2):
        coefs = [(2 * k + 1) * (new // 2) for k in range(32)]
        coefs += [-c for c in coefs]
        assert _jpegdct.requantize_values(coefs, [1] * 64, [new] * 64) == [
            exact(c, 1, new) for c in coefs
        ]


def test_requantized_tables_are_the_coarser_of_input_and_target(photo: Image.Image) -> None:
    target_luma, target_chroma = turbo.target_tables(50)
    for quality in (30, 50, 90):
        data = encode(photo, quality=quality)
        source, out = jpegfacts.parse(data), jpegfacts.parse(requantize(data))
        for index, (came, went) in enumerate(zip(source.components, out.components, strict=True)):
            target = target_luma if index == 0 else target_chroma
            assert out.tables[went.table] == turbo.requantized_table(
                source.tables[came.table], target
            )
    # A table coarser in some places and finer in others takes each entry's maximum.
    mixed = [[1 + (i % 2) * 200 for i in range(64)], [250 - i for i in range(64)]]
    data = encode(photo, qtables=mixed)
    source, out = jpegfacts.parse(data), jpegfacts.parse(requantize(data))
    assert out.tables[0] == turbo.requantized_table(source.tables[0], target_luma)
    assert out.tables[0] != source.tables[0] and out.tables[0] != target_luma


def test_an_input_coarser_than_the_target_keeps_its_coefficients(photo: Image.Image) -> None:
    data = encode(photo, quality=30, progressive=True)
    out = requantize(data)
    assert np.array_equal(rgb(out), rgb(data))  # the same coefficients, decoded the same
    assert jpegfacts.parse(out).frame == 0xC0  # written sequential
    # So the fast path does not run it: the input comes back stripped, quality unreported.
    assert not turbo.requantizes(jpegfacts.parse(data), 50)
    fast = turbo.compress_jpeg(data, 50, 10**8)
    assert fast is not None and fast.kept_original and fast.data == data
    result = compress(data)
    assert result.kept_original and result.quality is None
    assert turbo.requantizes(jpegfacts.parse(encode(photo, quality=51)), 50)


def test_wide_input_tables(photo: Image.Image) -> None:
    """16-bit quantizers (above 255) take the exact-division path; the output keeps them."""
    wide = [[300] * 64, [2] * 64]
    data = encode(photo, qtables=wide)
    assert max(jpegfacts.parse(data).tables[0]) == 300
    out = requantize(data)
    assert jpegfacts.parse(out).tables[0] == (300,) * 64
    assert ssim(data, out) > 0.85


def test_same_picture_as_the_pixel_route(
    photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Extension and fallback agree: same dimensions, no more bytes (within 3 %), and at
    least the same quality against the input (SSIM, PSNR within noise)."""
    for quality in (75, 90, 95):
        data = encode(photo, quality=quality, progressive=quality == 75)
        by_dct = turbo.compress_jpeg(data, 50, 10**8)
        monkeypatch.setattr(turbo, "_jpegdct", None)
        by_pixels = turbo.compress_jpeg(data, 50, 10**8)
        monkeypatch.undo()
        assert by_dct is not None and by_pixels is not None
        assert (by_dct.route, by_pixels.route) == (turbo.DCT, turbo.PIXELS)
        assert (by_dct.width, by_dct.height) == (by_pixels.width, by_pixels.height) == (512, 512)
        assert len(by_dct.data) <= len(by_pixels.data) * 1.03
        assert ssim(data, by_dct.data) >= ssim(data, by_pixels.data) - 0.002
        assert psnr(data, by_dct.data) >= psnr(data, by_pixels.data) - 0.3


def test_compress_uses_it(photo: Image.Image) -> None:
    data = encode(photo, quality=90)
    assert (
        compress(data).data
        == turbo.compress_jpeg(data, 50, 10**8).data
        == (turbo.splice_segments(requantize(data), ()))
    )


@pytest.mark.parametrize(
    "data",
    [b"not a jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"],
    ids=["garbage", "cut-header"],
)
def test_bad_data_is_an_error(data: bytes) -> None:
    from imgbatch.imaging import _jpegdct  # type: ignore[attr-defined]

    with pytest.raises(_jpegdct.JpegError):
        requantize(data)
    assert issubclass(_jpegdct.JpegError, ValueError)


def test_truncated_data_and_cmyk_are_errors(photo: Image.Image) -> None:
    from imgbatch.imaging import _jpegdct  # type: ignore[attr-defined]

    data = encode(photo, quality=90)
    with pytest.raises(_jpegdct.JpegError):
        requantize(data[: len(data) // 2])
    with pytest.raises(_jpegdct.JpegError, match="YCbCr"):
        requantize(encode(photo.convert("CMYK")))


@pytest.mark.parametrize(
    ("luma", "error"),
    [([16] * 63, "64"), ([0] * 64, "1..255"), ([256] * 64, "1..255"), (["x"] * 64, "integer")],
)
def test_bad_tables_are_refused(photo: Image.Image, luma: list[object], error: str) -> None:
    from imgbatch.imaging import _jpegdct  # type: ignore[attr-defined]

    with pytest.raises((ValueError, TypeError), match=error):
        _jpegdct.requantize(encode(photo), luma, [16] * 64)


def hostile_jpeg(blocks: int, dc_category: int, dc_quantizer: int = 255) -> bytes:
    """A greyscale baseline JPEG, one row of `blocks` blocks, each full of valid category-10
    AC values, the last with a DC of `dc_category` bits: libjpeg decodes such values, which
    no 8-bit encoder makes, and libjpeg-turbo's SIMD Huffman encoder writes them without a
    check, as a corrupt stream. Its table is 1 everywhere but the DC entry."""
    bits: list[int] = []

    def put(value: int, length: int) -> None:
        bits.extend((value >> i) & 1 for i in reversed(range(length)))

    for _ in range(blocks - 1):
        put(0, 1)  # DC difference: category 0
        for _ in range(63):
            put(0b10, 2)  # AC: run 0, category 10 ...
            put(0b1000000000, 10)  # ... +512
    put(0b10, 2)
    put((1 << dc_category) - 1, dc_category)
    put(0, 1)  # end of block
    bits.extend([1] * (-len(bits) % 8))
    data = bytearray()
    for i in range(0, len(bits), 8):
        data.append(int("".join(map(str, bits[i : i + 8])), 2))
        if data[-1] == 0xFF:
            data.append(0)  # byte stuffing

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    counts = bytes([1, 1] + [0] * 14)  # one code of 1 bit, one of 2 bits
    frame = (
        bytes([8]) + (8).to_bytes(2, "big") + (8 * blocks).to_bytes(2, "big") + b"\x01\x01\x11\x00"
    )
    return (
        b"\xff\xd8"
        + segment(0xDB, b"\x00" + bytes([dc_quantizer] + [1] * 63))
        + segment(0xC0, frame)
        + segment(0xC4, b"\x00" + counts + bytes([0, dc_category]))
        + segment(0xC4, b"\x10" + counts + b"\x00\x0a")
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + bytes(data)
        + b"\xff\xd9"
    )


@pytest.mark.parametrize("dc_category", [11, 12, 15])
def test_coefficients_out_of_the_jpeg_range_go_to_the_pixel_path(dc_category: int) -> None:
    from imgbatch.imaging import _jpegdct  # type: ignore[attr-defined]

    data = hostile_jpeg(200, dc_category)
    assert Image.open(io.BytesIO(data)).size == (1600, 8)  # it does decode
    with pytest.raises(_jpegdct.JpegError, match="range"):
        requantize(data)
    # compress(): the DCT route refuses it, Pillow re-encodes the pixels, and what is
    # stored decodes cleanly.
    assert turbo.route(jpegfacts.parse(data), True) == turbo.DCT
    assert turbo.requantizes(jpegfacts.parse(data), 50)
    assert turbo.compress_jpeg(data, 50, 10**8) is None
    result = compress(data)
    assert result.format == "jpeg"
    import simplejpeg

    assert simplejpeg.decode_jpeg(result.data, colorspace="GRAY", strict=True).shape[:2] == (
        8,
        1600,
    )


def test_a_valid_extreme_dc_is_kept() -> None:
    """Black and white blocks at quantizer 1: DC -1024 and +1016, AC up to the limit."""
    im = Image.new("L", (64, 8), 0)
    im.paste(255, (8, 0, 16, 8))
    data = encode(im, qtables=[[1] * 64])
    out = requantize(data, quality=100)  # target 1 everywhere: coefficients unchanged
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out))), np.asarray(im))


def test_output_larger_than_half_the_input_grows_the_buffer(photo: Image.Image) -> None:
    """The output buffer starts at half the input: an unchanged, re-entropy-coded input is
    larger than that, so the buffer grows (several times for a large image)."""
    data = encode(photo.resize((1536, 1536)), quality=20, optimize=True, progressive=True)
    out = requantize(data)
    assert len(out) > len(data) // 2 + 4096
    assert np.array_equal(rgb(out), rgb(data))
