"""What an image file is and how big it claims to be, from its first bytes alone.

Pure, no I/O and no Pillow: `imaging` uses it to refuse a file, or a pixel
count over the limit, before any decoder allocates or parses anything.
"""

from __future__ import annotations

import re


def sniff_format(data: bytes) -> str | None:
    """The allow-listed format named by the magic bytes (one of `imaging.FORMATS`), else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if _ftyp_brands(data) & {b"avif", b"avis"}:
        return "avif"
    return None


def _ftyp_brands(data: bytes) -> set[bytes]:
    """Major and compatible brands of an ISO-BMFF `ftyp` box (AVIF, HEIF), else empty."""
    if data[4:8] != b"ftyp":
        return set()
    end = min(int.from_bytes(data[:4], "big"), len(data), 4096)
    return {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}


_SVG = re.compile(
    rb"\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*|<!doctype[^>]*>\s*)*<svg[\s>]", re.I | re.S
)
_BMP_DIB_SIZES = {12, 40, 52, 56, 64, 108, 124}


def refused_format(data: bytes) -> str | None:
    """Name a real image format that is not on the allow-list, else None."""
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_DIB_SIZES:
        return "BMP"
    if data.startswith(b"%PDF-"):
        return "PDF"
    if data.startswith(b"8BPS"):
        return "PSD"
    if data.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    if data.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL"
    if _ftyp_brands(data) & {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"}:
        return "HEIF"
    if _SVG.match(data[:4096].removeprefix(b"\xef\xbb\xbf")):
        return "SVG"
    return None


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height from the header alone, so limits apply before Pillow opens it.

    (Pillow's WebP opener allocates the canvas before its own size check.) None when
    the header is not where expected; Pillow's parse is then checked instead.
    """
    if fmt == "png" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if fmt == "gif" and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if fmt == "webp":
        chunk = data[12:16]
        if chunk == b"VP8X" and len(data) >= 30:
            w, h = data[24:27], data[27:30]
            return int.from_bytes(w, "little") + 1, int.from_bytes(h, "little") + 1
        if chunk == b"VP8 " and len(data) >= 30:
            w, h = data[26:28], data[28:30]
            return int.from_bytes(w, "little") & 0x3FFF, int.from_bytes(h, "little") & 0x3FFF
        if chunk == b"VP8L" and len(data) >= 25:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if fmt == "jpeg":
        return _jpeg_size(data)
    return None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


# A marker inside entropy-coded data: 0xFF then anything but a stuffed 0x00, a restart
# marker (RST0-7) or another 0xFF (fill bytes before the marker).
_ENTROPY_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_SOS, _EOI = 0xDA, 0xD9


def jpeg_scans(data: bytes, stop_after: int | None = None) -> int:
    """How many scans (SOS segments) a JPEG holds, counted from its markers alone.

    A progressive JPEG may hold thousands of tiny scans, and libjpeg passes over
    every block of the image for each one: 15,000 scans of 76 bytes made a 1.3 MB
    file cost hours of CPU. Counting them costs one regex search per marker.
    Segments are skipped by their length (so an EXIF thumbnail's markers do not
    count); inside a scan's entropy-coded data the next marker is searched for.
    Counting stops after `stop_after` scans, or at EOI or where the data ends.
    """
    count = 0
    pos = 2
    size = len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:  # garbage between segments: find the next marker
            found = _ENTROPY_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == _EOI:
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length: TEM, RSTn, SOI
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == _SOS:
            count += 1
            if stop_after is not None and count >= stop_after:
                break
            found = _ENTROPY_MARKER.search(data, pos)  # the scan's data runs to the next marker
            if found is None:
                break
            pos = found.start()
    return count


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            return int.from_bytes(data[pos + 7 : pos + 9], "big"), int.from_bytes(
                data[pos + 5 : pos + 7], "big"
            )
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None
