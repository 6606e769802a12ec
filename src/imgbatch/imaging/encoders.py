"""The encoders and their settings: one place that turns pixels into bytes. Pure, no I/O.

Settings were chosen by measurement (`python bench/compress.py --sweep`, one thread,
2 MP photographs); their comments say what the alternatives cost. Both the pipeline's
final encode and the `quality=auto` search go through `lossy`, so they cannot drift apart.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from imgbatch.errors import ImageFailure

PILLOW_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "avif": "AVIF"}

# 2 MP photos, one thread, CPU ms
JPEG_OPTIMIZE = False  # Huffman optimisation: -8 % bytes for +40 % decode+encode time
WEBP_METHOD = 2  # 39 ms vs 103 ms for the default 4, +9 % bytes; 0-1: +19-28 % bytes
AVIF_SPEED = 8  # 167 ms; 6 (default): 552 ms, -15 % bytes; 7: slower, same size; 9: 59 ms, +6 %
PNG_COMPRESS_LEVEL = 6  # zlib level; 9 (what optimize=True means) is 3-5x slower for 2-3 %
PNG_COLOURS = 256
# FASTOCTREE: 66 ms; MEDIANCUT 264 ms and +35 % bytes, RGB only; MAXCOVERAGE 1.2 s;
# libimagequant is not in this Pillow (via libvips: 234 ms, +33 % bytes, better PSNR).
PNG_QUANTIZE = Image.Quantize.FASTOCTREE


def save(im: Image.Image, fmt: str, icc_profile: bytes | None, **params: Any) -> bytes:
    if icc_profile:
        params["icc_profile"] = icc_profile
    out = io.BytesIO()
    try:
        im.save(out, PILLOW_NAMES[fmt], **params)
    except MemoryError:
        raise
    except Exception as exc:  # the input decoded, so this one is ours
        # The encoder's own words stay in the chained exception (logged by the worker).
        raise ImageFailure("internal", f"could not encode the image as {fmt}") from exc
    return out.getvalue()


def lossy(im: Image.Image, fmt: str, quality: int, icc: bytes | None = None) -> bytes:
    """JPEG, WebP or AVIF at `quality` with the settings above."""
    if fmt == "jpeg":
        return save(im, "jpeg", icc, quality=quality, optimize=JPEG_OPTIMIZE)
    if fmt == "webp":
        return save(im, "webp", icc, quality=quality, method=WEBP_METHOD)
    return save(im, "avif", icc, quality=quality, speed=AVIF_SPEED)


def snap_alpha(palette: Image.Image, within: int = 8) -> None:
    """Make near-opaque and near-clear palette entries exact: the octree averages alpha
    too, which would leave an opaque product at alpha 252 (faintly see-through)."""
    entries = palette.getpalette("RGBA") or []
    for i in range(3, len(entries), 4):
        if entries[i] >= 255 - within:
            entries[i] = 255
        elif entries[i] <= within:
            entries[i] = 0
    palette.putpalette(entries, "RGBA")
