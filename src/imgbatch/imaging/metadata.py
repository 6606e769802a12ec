"""Lossless metadata stripping for images kept as they were (pure; bytes in, bytes out).

When re-encoding would not shrink an image, imgbatch stores the original bytes
("never larger than the input"). Those bytes may still carry EXIF (GPS position,
camera serial), XMP, IPTC or text comments; these functions drop them without
touching the pixels, keeping what display needs: the ICC profile, JFIF/Adobe
markers, and every image chunk. The result is never larger than the input, and
any structure they do not understand is returned unchanged.
"""

from __future__ import annotations

_JPEG_DROP = {0xE1, 0xED, 0xFE}  # APP1 (EXIF, XMP), APP13 (IPTC/Photoshop), COM
_PNG_DROP = {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WEBP_DROP = {b"EXIF", b"XMP "}


def strip_jpeg(data: bytes) -> bytes:
    """Drop APP1/APP13/COM segments before the first scan; the entropy-coded data is copied as is."""
    if not data.startswith(b"\xff\xd8"):
        return data
    out = bytearray(b"\xff\xd8")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return data
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the rest is image data
            out += data[pos:]
            return bytes(out)
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > len(data):
            return data
        if marker not in _JPEG_DROP:
            out += data[pos:end]
        pos = end
    return data


def strip_png(data: bytes) -> bytes:
    """Drop text, EXIF and time chunks; keep every other chunk (iCCP, tRNS, IDAT…)."""
    if not data.startswith(_PNG_SIGNATURE):
        return data
    out = bytearray(_PNG_SIGNATURE)
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return data
        if kind not in _PNG_DROP:
            out += data[pos:end]
        pos = end
        if kind == b"IEND":
            return bytes(out)
    return data


def strip_webp(data: bytes) -> bytes:
    """Drop EXIF and XMP chunks of an extended WebP and clear their VP8X flags."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:16] != b"WEBPVP8X":
        return data
    chunks = bytearray()
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        end = pos + 8 + size + (size & 1)
        if end > len(data):
            return data
        if kind not in _WEBP_DROP:
            chunks += data[pos:end]
        pos = end
    chunks[8] &= ~0x0C & 0xFF  # VP8X flags: EXIF (0x08) and XMP (0x04) no longer present
    return b"RIFF" + (len(chunks) + 4).to_bytes(4, "little") + b"WEBP" + bytes(chunks)


_STRIPPERS = {"jpeg": strip_jpeg, "png": strip_png, "webp": strip_webp}


def strip_metadata(data: bytes, fmt: str) -> bytes:
    """The image without privacy-relevant metadata, or `data` itself when nothing applies."""
    stripper = _STRIPPERS.get(fmt)
    if stripper is None:
        return data
    stripped = stripper(data)
    return stripped if len(stripped) <= len(data) else data
