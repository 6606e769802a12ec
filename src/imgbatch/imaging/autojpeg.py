"""`quality=auto` for JPEG in, JPEG out, no resize: searched on luma, encoded by `turbo`.

Why: a fixed quality takes libjpeg-turbo's fast path (`turbo`: DCT requantization, no
pixels), so searching on Pillow's general path cost 4x the fixed path. Here only what
the score needs is decoded: the input's luma plane (no chroma, no colour conversion),
once. The search encodes a grey mosaic of the sampled tiles (`autoquality`), which is
what a colour JPEG's luma is coded as: same table, same independent 8x8 blocks. The
chosen quality then goes through `turbo.encode`, exactly as a fixed one would.

The reference is the input's Y plane as libjpeg-turbo decodes it (Pillow's general path
scores against the luma of the decoded RGB, which differs by rounding and clipping).

The stored output is requantized from the input's coefficients rather than encoded from
its pixels, so its score can differ a little from the mosaic's (by 0.004 at most on the
corpus of `bench/auto_quality.py`): the output itself is decoded and scored, and the
quality raised by `RAISE_STEP` (at most `MAX_RAISES` times) while it misses, as for
WebP and AVIF.
"""

from __future__ import annotations

import numpy as np
import simplejpeg

from . import turbo
from .autoquality import (
    HIGH,
    MAX_RAISES,
    RAISE_STEP,
    Reference,
    luma_mosaic,
    luma_plane,
    plan_sample,
    search,
)

# The mosaic aims this far above the target. Requantized outputs scored within 0.0005 of
# their mosaic on 21 of 24 corpus images, and a miss costs a second full encode and decode.
MARGIN = 0.0005


def decoded_luma(data: bytes) -> np.ndarray:
    """The 8-bit luma plane (h, w) of a JPEG; ValueError when libjpeg-turbo refuses it."""
    return simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)[..., 0]


def compress_auto(
    data: bytes, target: float, max_pixels: int
) -> tuple[turbo.FastResult, int] | None:
    """The output at the lowest quality meeting `target` and that quality, or None when
    the general path must handle this image (as `turbo.compress_jpeg`)."""
    prepared = turbo.prepare(data, max_pixels)
    if prepared is None:
        return None
    facts, route = prepared
    try:
        luma = decoded_luma(data)
    except ValueError:
        return None
    sample = plan_sample(luma.shape[1], luma.shape[0])
    tiles = np.ascontiguousarray(luma_mosaic(luma, sample)[..., None])
    reference = Reference(luma_plane(tiles[..., 0], sample), sample)

    def measure(quality: int) -> float:
        coded = simplejpeg.encode_jpeg(tiles, quality=quality, colorspace="GRAY")
        return reference.score(luma_plane(decoded_luma(coded), sample))

    aim = target + MARGIN if target + MARGIN < 1 else target
    quality = search(measure, aim).quality
    for raises in range(MAX_RAISES + 1):
        result = turbo.encode(data, facts, route, quality)
        if result is None or result.kept_original or quality >= HIGH or raises == MAX_RAISES:
            break
        stored = luma_plane(luma_mosaic(decoded_luma(result.data), sample), sample)
        if reference.score(stored) >= target:
            break
        quality = min(HIGH, quality + RAISE_STEP)
    return None if result is None else (result, quality)
