"""Bytes and options in, bytes and facts out: the compression pipeline, pure.

Holds: `compress` (the ordered steps: sniff, limit pixels before decoding, orient, convert,
resize, strip metadata, pick the quality, encode, never larger), `options` (what it is asked
and answers), `encoders` (the encoder settings, shared with the search), `resizing` (the box
arithmetic and the downscale), `autoquality` (the perceptual score and the search behind
`quality="auto"`), `formats` (magic-byte sniffing, pixel limits read from headers),
`metadata` (lossless metadata stripping that keeps ICC and orientation), and the
JPEG -> JPEG fast path: `turbo` (libjpeg-turbo directly, chosen per image by a pure rule on
the header facts read by `jpegfacts`), and `autojpeg` (`quality="auto"` on that path: the
search on the luma plane, the output requantized and scored again).
May import: Pillow, simplejpeg, numpy and `imgbatch.errors`. No network, database or storage.
"""

from __future__ import annotations

from .autoquality import DEFAULT_TARGET as DEFAULT_AUTO_TARGET
from .compress import BLOCKS_MAX, compress, configure, sniff_format
from .metadata import strip_jpeg, strip_metadata, strip_png, strip_webp
from .options import (
    AUTO,
    FORMATS,
    LOSSY,
    TARGETS,
    CompressOptions,
    CompressResult,
)
from .resizing import MAX_SIDE

__all__ = [
    "AUTO",
    "BLOCKS_MAX",
    "DEFAULT_AUTO_TARGET",
    "FORMATS",
    "LOSSY",
    "MAX_SIDE",
    "TARGETS",
    "CompressOptions",
    "CompressResult",
    "compress",
    "configure",
    "sniff_format",
    "strip_jpeg",
    "strip_metadata",
    "strip_png",
    "strip_webp",
]
