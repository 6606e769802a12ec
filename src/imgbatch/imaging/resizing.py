"""Fit an image inside a box: the arithmetic, and a downscale that is fast and clean. Pure.

The box applies to the image as displayed, so the EXIF orientation is applied to the
arithmetic first (a portrait photo stored as landscape with orientation 6 is 3000 wide
on screen, not 4000). Images are scaled down only, aspect ratio kept, never up.

Speed: a JPEG reduced by 2x or more is decoded at 1/2, 1/4 or 1/8 scale in the DCT
domain first (`Image.draft`, libjpeg's scaled IDCT: the high-frequency coefficients are
dropped, which is itself a low-pass filter), then finished with Lanczos. `bench/compress.py
--resize` measures it.
"""

from __future__ import annotations

from PIL import Image

MAX_SIDE = 16_384  # the largest max_width / max_height accepted
_SWAPPED = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image a quarter


def displayed_size(width: int, height: int, orientation: int | None) -> tuple[int, int]:
    """The size on screen of a `width` x `height` image carrying this EXIF orientation."""
    return (height, width) if orientation in _SWAPPED else (width, height)


def fit_within(
    width: int, height: int, max_width: int | None, max_height: int | None
) -> tuple[int, int] | None:
    """The size that fits `width` x `height` inside the box, or None when it fits already.

    Either side of the box may be None (unbounded). The limiting side lands exactly on
    the box; the other is rounded, and never below 1 pixel.
    """
    scale_w = max_width / width if max_width else None
    scale_h = max_height / height if max_height else None
    scales = [s for s in (scale_w, scale_h) if s is not None]
    if not scales or min(scales) >= 1:
        return None
    if scale_h is None or (scale_w is not None and scale_w <= scale_h):
        assert max_width is not None
        new = (max_width, max(1, round(height * max_width / width)))
    else:
        assert max_height is not None
        new = (max(1, round(width * max_height / height)), max_height)
    # rounding may push the other side one pixel past its bound
    return (min(new[0], max_width or new[0]), min(new[1], max_height or new[1]))


def draft_size(target: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    """The stored (not displayed) size a JPEG may be DCT-scaled down to for `target`."""
    return displayed_size(*target, orientation)  # a quarter turn swaps back


def downscale(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Lanczos to `size`. Palette and 1-bit images are expanded first, as Pillow would
    otherwise fall back to nearest-neighbour; alpha is premultiplied by Pillow itself."""
    if im.size == size:
        return im
    if im.mode in ("1", "P", "PA") or "transparency" in im.info:
        # a palette, bits or a colour key cannot be interpolated: expand them first
        grey = im.mode in ("1", "L")
        im = im.convert(
            ("LA" if grey else "RGBA") if im.has_transparency_data else "L" if grey else "RGB"
        )
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
