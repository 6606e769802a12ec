"""A ZIP archive written as a stream: stored entries, constant memory, any size (ZIP64).

Why not `zipfile`: written to a stream, the standard library (1) puts every entry's CRC
and sizes in a data descriptor after the data, which streaming readers (Java's
ZipInputStream, many "unzip while downloading" tools) refuse for stored entries, and (2)
keeps a ZipInfo object per entry until the end, about 550 bytes each (28 MB for 50,000
images, measured). Here every local header carries the entry's CRC and sizes, so the
archive is readable front to back as well as through its central directory; an entry
above `SMALL` bytes is read twice to learn them first (once to measure, once to send,
checked against each other), a smaller one is held while it is measured. What stays in
memory is at most `SMALL` bytes of one entry plus the central directory, about 90 bytes
per entry, serialised as it goes.

Entries are stored, not deflated: the images are compressed already. ZIP64 records are
written only when the archive needs them (an offset past 4 GiB, or 65,535 entries or
more). Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

SMALL = 1024 * 1024  # an entry up to this size is held while its CRC is computed
OUT_CHUNK = 64 * 1024  # bytes the stream hands on at a time
MARK_32 = 0xFFFFFFFF  # a 32-bit field's value meaning "see the ZIP64 record"
MARK_16 = 0xFFFF
ZIP64_OFFSET = MARK_32  # offsets from here on need ZIP64 records
ZIP64_ENTRIES = MARK_16  # so do this many entries
_UTF8 = 0x0800  # general purpose flag bit 11: names are UTF-8
_UNIX_FILE = 0o100644 << 16  # external attributes: a regular file, rw-r--r--


@dataclass(frozen=True)
class Entry:
    """One file of the archive: `open()` returns its bytes as chunks, and may be called
    twice (an entry above `SMALL` is read once to measure it, once to send it)."""

    name: str
    modified: datetime
    open: Callable[[], Iterator[bytes]]


class ChangedWhileSent(Exception):
    """An entry's bytes differed between the two reads: the archive would be corrupt."""


def _dos_time(when: datetime) -> tuple[int, int]:
    year = min(max(when.year, 1980), 2107)
    date = ((year - 1980) << 9) | (when.month << 5) | when.day
    time = (when.hour << 11) | (when.minute << 5) | (when.second // 2)
    return time, date


def _measure(chunks: Iterator[bytes]) -> tuple[int, int]:
    crc = size = 0
    try:
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    finally:
        _close(chunks)
    return crc, size


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


class _Output:
    """Coalesces the many small pieces (headers) and large ones into ~64 KiB chunks."""

    def __init__(self) -> None:
        self.offset = 0
        self._pending: list[bytes] = []
        self._size = 0

    def add(self, data: bytes) -> Iterator[bytes]:
        self.offset += len(data)
        self._pending.append(data)
        self._size += len(data)
        if self._size >= OUT_CHUNK:
            yield from self.drain()

    def drain(self) -> Iterator[bytes]:
        if self._pending:
            data = b"".join(self._pending)
            self._pending, self._size = [], 0
            yield data


def iter_zip(entries: Iterable[Entry]) -> Iterator[bytes]:
    """The archive's bytes, entry after entry, then the central directory."""
    out = _Output()
    central = bytearray()
    count = 0
    for entry in entries:
        name = entry.name.encode("utf-8")
        time, date = _dos_time(entry.modified)
        held: list[bytes] = []
        held_size = 0
        chunks = entry.open()
        try:
            for chunk in chunks:
                held.append(chunk)
                held_size += len(chunk)
                if held_size > SMALL:
                    break
        finally:
            _close(chunks)
        if held_size <= SMALL:  # read to its end: held whole
            data = b"".join(held)
            crc, size, body = zlib.crc32(data), len(data), iter((data,))
        else:  # measured first, then sent
            held = []
            crc, size = _measure(entry.open())
            body = entry.open()
        if size >= MARK_32:
            raise ValueError(f"entry {entry.name!r} is 4 GiB or more")
        offset = out.offset
        yield from out.add(
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,  # local file header
                20,  # version needed: 2.0
                _UTF8,
                0,  # stored
                time,
                date,
                crc,
                size,
                size,
                len(name),
                0,
            )
            + name
        )
        sent_crc = sent = 0
        try:
            for chunk in body:
                sent_crc = zlib.crc32(chunk, sent_crc)
                sent += len(chunk)
                yield from out.add(chunk)
        finally:
            _close(body)
        if (sent_crc, sent) != (crc, size):
            raise ChangedWhileSent(f"{entry.name!r} changed while the archive was sent")
        central += _central_header(name, time, date, crc, size, offset)
        count += 1
    directory_offset = out.offset
    yield from out.drain()
    for start in range(0, len(central), OUT_CHUNK):  # in slices: never a second copy of it
        yield from out.add(bytes(central[start : start + OUT_CHUNK]))
    yield from out.add(_end_records(count, len(central), directory_offset))
    yield from out.drain()


def _central_header(name: bytes, time: int, date: int, crc: int, size: int, offset: int) -> bytes:
    extra = b""
    version = 20
    if offset >= ZIP64_OFFSET:  # the local header lies past 4 GiB: its offset goes in ZIP64
        extra = struct.pack("<HHQ", 0x0001, 8, offset)
        offset, version = MARK_32, 45
    return (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,  # central directory file header
            (3 << 8) | version,  # made by: UNIX
            version,  # needed
            _UTF8,
            0,  # stored
            time,
            date,
            crc,
            size,
            size,
            len(name),
            len(extra),
            0,  # comment
            0,  # disk
            0,  # internal attributes
            _UNIX_FILE,
            offset,
        )
        + name
        + extra
    )


def _end_records(count: int, size: int, offset: int) -> bytes:
    records = b""
    if count >= ZIP64_ENTRIES or size >= ZIP64_OFFSET or offset >= ZIP64_OFFSET:
        zip64_end = offset + size
        records += struct.pack(
            "<IQHHIIQQQQ",
            0x06064B50,  # ZIP64 end of central directory record
            44,  # its size after this field
            (3 << 8) | 45,
            45,
            0,
            0,
            count,
            count,
            size,
            offset,
        )
        records += struct.pack("<IIQI", 0x07064B50, 0, zip64_end, 1)  # its locator
        count = count if count < ZIP64_ENTRIES else MARK_16
        size = size if size < ZIP64_OFFSET else MARK_32
        offset = offset if offset < ZIP64_OFFSET else MARK_32
    return records + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, size, offset, 0)
