"""The streamed ZIP writer: readable through its central directory and front to back,
stored entries with their CRC and sizes in every local header, ZIP64 when needed, and
memory that does not grow with the entries' sizes.
"""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from imgbatch.reports import zipstream
from imgbatch.reports.images_zip import entry_name, safe_name
from imgbatch.reports.zipstream import ChangedWhileSent, Entry, iter_zip

WHEN = datetime(2026, 12, 2, 10, 30, 44, tzinfo=UTC)


def entry(name: str, data: bytes, chunk: int = 7000) -> Entry:
    def chunks() -> Iterator[bytes]:
        return iter([data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""])

    return Entry(name, WHEN, chunks)


def archive(entries: list[Entry]) -> bytes:
    return b"".join(iter_zip(entries))


def read_front_to_back(data: bytes) -> list[tuple[str, bytes]]:
    """What a streaming reader does: local headers only, in order, no central directory."""
    found = []
    offset = 0
    while data[offset : offset + 4] == b"PK\x03\x04":
        (_, _, flags, method, _, _, crc, csize, usize, nlen, xlen) = struct.unpack(
            "<IHHHHHIIIHH", data[offset : offset + 30]
        )
        assert flags & 0x08 == 0, "a data descriptor: streaming readers refuse it when stored"
        assert method == 0 and csize == usize
        name = data[offset + 30 : offset + 30 + nlen].decode("utf-8" if flags & 0x800 else "cp437")
        start = offset + 30 + nlen + xlen
        body = data[start : start + usize]
        assert zlib.crc32(body) == crc
        found.append((name, body))
        offset = start + usize
    assert data[offset : offset + 4] == b"PK\x01\x02"  # then the central directory
    return found


def test_entries_round_trip_through_zipfile_and_front_to_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(zipstream, "SMALL", 50_000)  # so some entries take the two-read path
    contents = {
        "output.csv": b"S. No.,Product Name\n1,Shoe\n",
        "1/1-Shoe.jpg": os.urandom(40_000),  # held whole
        "1/2-Shoe.webp": os.urandom(180_001),  # measured, then sent
        "2/1-Caf\u00e9_\u65e5\u672c.png": os.urandom(50_000),  # exactly SMALL: held
        "3/1-empty.gif": b"",
    }
    data = archive([entry(name, body) for name, body in contents.items()])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == list(contents)
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.date_time == (2026, 12, 2, 10, 30, 44)
            assert zf.read(info) == contents[info.filename]
    assert read_front_to_back(data) == list(contents.items())


def test_zip64_records_when_offsets_or_entries_pass_the_32_bit_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 4 GiB of test data is too much to write: lower the thresholds instead.
    monkeypatch.setattr(zipstream, "ZIP64_OFFSET", 1000)
    monkeypatch.setattr(zipstream, "ZIP64_ENTRIES", 3)
    contents = {f"{i}/1-p.jpg": os.urandom(700) for i in range(5)}
    data = archive([entry(name, body) for name, body in contents.items()])
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # ZIP64 end record and locator
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert {info.filename: zf.read(info) for info in zf.infolist()} == contents
        assert [info.header_offset for info in zf.infolist()][-1] > 1000
    assert read_front_to_back(data) == list(contents.items())


def test_an_entry_that_changes_between_its_two_reads_stops_the_archive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(zipstream, "SMALL", 10)
    versions = iter([b"a" * 100, b"a" * 100, b"b" * 100])

    def changing() -> Iterator[bytes]:
        return iter([next(versions)])

    with pytest.raises(ChangedWhileSent):
        archive([Entry("x.jpg", WHEN, changing)])


def test_memory_stays_flat_however_large_the_entries() -> None:
    """40 entries of 2 MiB (80 MiB) and 3,000 small ones: a few MiB at most, the central
    directory included."""
    block = os.urandom(64 * 1024)

    def big() -> Iterator[bytes]:
        return (block for _ in range(32))  # 2 MiB, never held

    def small() -> Iterator[bytes]:
        return iter([block[:900]])

    entries = [Entry(f"{i}/1-Big.jpg", WHEN, big) for i in range(40)]
    entries += [Entry(f"{i}/1-Small.jpg", WHEN, small) for i in range(3000)]
    tracemalloc.start()
    total = 0
    largest = 0
    for chunk in iter_zip(entries):
        total += len(chunk)
        largest = max(largest, len(chunk))
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total > 40 * 2 * 1024 * 1024
    assert largest <= zipstream.SMALL + zipstream.OUT_CHUNK + 1024
    assert peak < 4 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_entry_names() -> None:
    assert entry_name(12, 0, "Red Shoe / Size 42", "r/12/0.webp") == "12/1-Red_Shoe_Size_42.webp"
    assert (
        entry_name(3, 1, "Caf\u00e9 \u00c9t\u00e9", "r/3/1.jpg")
        == "3/2-Caf\u00e9_\u00c9t\u00e9.jpg"
    )
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("C:\\x\\y.jpg") == "C_x_y.jpg"
    assert safe_name("=cmd|' /C calc'!A0") == "cmd_C_calc_A0"
    assert safe_name(" \t\n") == safe_name("...") == "image"
    assert len(safe_name("x" * 500)) == 80
