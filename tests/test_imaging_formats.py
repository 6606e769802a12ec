"""Counting a JPEG's scans from its markers, before any decoder sees it (pure)."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from conftest import encode, photo
from imgbatch.errors import ImageFailure
from imgbatch.imaging import CompressOptions, compress
from imgbatch.imaging.compress import MAX_JPEG_SCANS
from imgbatch.imaging.formats import jpeg_scans
from support.jpegs import many_scan_jpeg


def test_baseline_and_progressive_jpegs_have_their_usual_scans() -> None:
    picture = photo(120, 80, seed=1)
    assert jpeg_scans(encode(picture, "JPEG", quality=80)) == 1
    assert jpeg_scans(encode(picture, "JPEG", quality=80, progressive=True)) == 10
    assert jpeg_scans(encode(picture.convert("L"), "JPEG", progressive=True)) == 6


def test_thousands_of_scans_are_counted_and_counting_can_stop_early() -> None:
    data = many_scan_jpeg(64, 64, 2_000)
    assert jpeg_scans(data) == 2_000
    assert jpeg_scans(data, stop_after=101) == 101


def test_markers_inside_metadata_and_thumbnails_do_not_count() -> None:
    # An APP1 segment full of SOS marker bytes (as an EXIF thumbnail would hold) is skipped.
    exif = b"Exif\x00\x00" + b"\xff\xda\x00\x08\x01\x01\x00\x00" * 500
    data = encode(photo(64, 48), "JPEG", quality=80, exif=exif)
    assert data.count(b"\xff\xda") > 500
    assert jpeg_scans(data) == 1


def test_counting_a_large_photo_is_cheap() -> None:
    big = encode(photo(3000, 2000, seed=4), "JPEG", quality=95)
    assert len(big) > 2_000_000
    started = time.perf_counter()
    assert jpeg_scans(big) == 1
    assert time.perf_counter() - started < 0.2


def test_truncated_and_garbage_jpegs_count_what_is_there() -> None:
    data = encode(photo(64, 48), "JPEG", quality=80, progressive=True)
    assert jpeg_scans(data[: len(data) // 2]) < 10
    assert jpeg_scans(b"\xff\xd8\xff") == 0
    assert jpeg_scans(b"\xff\xd8" + b"\x00" * 100) == 0


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding() -> None:
    data = many_scan_jpeg(2000, 2000, 3_000)  # ~10 s of CPU to decode on this machine
    started = time.process_time()
    with pytest.raises(ImageFailure) as failure:
        compress(data, CompressOptions())
    assert time.process_time() - started < 0.5
    assert failure.value.code == "too_complex"
    assert str(MAX_JPEG_SCANS) in failure.value.message


def test_a_jpeg_at_the_scan_limit_is_compressed() -> None:
    data = many_scan_jpeg(64, 64, MAX_JPEG_SCANS)
    result = compress(data, CompressOptions(quality=50))
    assert (result.width, result.height) == (64, 64)
    with Image.open(io.BytesIO(data)) as original:
        assert original.size == (64, 64)
