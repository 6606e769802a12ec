"""Bytes and options in, bytes and facts out: the compression pipeline, pure.

Holds: `compress` (the ordered steps: sniff, limit pixels before decoding, orient, convert,
strip metadata, encode, never larger), `formats` (magic-byte sniffing, pixel limits read from
headers), `metadata` (lossless metadata stripping that keeps ICC and orientation), and the
JPEG -> JPEG fast path: `turbo` (libjpeg-turbo directly, chosen per image by a pure rule on
the header facts read by `jpegfacts`).
May import: Pillow, simplejpeg and `imgbatch.errors`. No network, database or storage.
"""

from __future__ import annotations

from .compress import (
    BLOCKS_MAX,
    FORMATS,
    TARGETS,
    CompressOptions,
    compress,
    configure,
    sniff_format,
)
from .metadata import strip_jpeg, strip_metadata, strip_png, strip_webp

__all__ = [
    "BLOCKS_MAX",
    "FORMATS",
    "TARGETS",
    "CompressOptions",
    "compress",
    "configure",
    "sniff_format",
    "strip_jpeg",
    "strip_metadata",
    "strip_png",
    "strip_webp",
]
