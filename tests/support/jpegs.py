"""Hostile JPEGs built in the test: progressive files with thousands of tiny scans.

libjpeg passes over every block of the image for each scan, so a valid file of
a few hundred kilobytes can cost minutes of CPU to decode. The file is a real
progressive JPEG from Pillow whose last scan is repeated: libjpeg decodes every
copy (it only warns about the repeated progression), so the result is valid
and decodes to the same picture, just slowly.
"""

from __future__ import annotations

import io

from PIL import Image


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment; a scan's segment runs to the next marker."""
    out = []
    pos = 2
    while pos < len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            out.append((marker, pos, pos + 2))
            break
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            while True:
                ff = data.index(b"\xff", end)
                if data[ff + 1] == 0 or 0xD0 <= data[ff + 1] <= 0xD7:
                    end = ff + 2
                    continue
                end = ff
                break
        out.append((marker, pos, end))
        pos = end
    return out


def many_scan_jpeg(width: int, height: int, scans: int) -> bytes:
    """A valid progressive JPEG of width x height with `scans` scans (at least Pillow's 10)."""
    image = Image.new("RGB", (width, height), (180, 40, 90))
    out = io.BytesIO()
    image.save(out, "JPEG", progressive=True, quality=80)
    data = out.getvalue()
    sos = [seg for seg in _segments(data) if seg[0] == 0xDA]
    extra = scans - len(sos)
    if extra < 0:
        raise ValueError(f"Pillow already writes {len(sos)} scans")
    _, start, end = sos[-1]
    return data[:end] + data[start:end] * extra + data[end:]
