"""`quality=auto`: the lowest quality whose output still looks like its input. Pure, no I/O.

The score is SSIM on luma, measured at full resolution on a sample of at most
`SAMPLE_PIXELS` (0.26 MP): 32-px tiles spread over the whole picture in a staggered
lattice. A downscaled copy would have been cheaper to build but hides the very
artifacts that decide visibility at 100 % zoom (at 1/4 scale an 8-px JPEG block is 2 px).

The search encodes only a mosaic of those tiles, each kept on the 16-px grid it had in
the image. For JPEG that is exact: luma blocks are coded independently, so a tile
decodes to the same pixels in the mosaic as in the whole image. WebP and AVIF predict
and filter across blocks, so their full encode is scored again and the quality raised
when it misses (`MAX_RAISES`); so is a JPEG made by requantization (`autojpeg`).
Qualities are tried by secant steps on log(1 - score), which is close to linear in
quality, alternating with bisection, until the lowest pass is within `CLOSE` of the
highest fail or interpolating between them puts the target less than a step below the
pass: `MAX_TRIES` encodes of the mosaic at most, 3.7 on average on the corpus
(`bench/auto_quality.py`; 4.6 when the search went on to a bracket of 1).

Scoring works on the mosaic as one plane: window sums by strided adds, and a mask
(`window_mask`) keeps the windows inside one tile, so no copy regroups the tiles.

Choices, each measured on the corpus of `bench/auto_quality.py`:
- SSIM's contrast-structure term only. The luminance term swings by up to 0.07 when a
  black area moves by one level (invisible), which made scores non-monotone in quality
  on 5 of 24 images.
- Windows flat in both images (variance under 2^2) do not count: a white background
  would otherwise vouch for a product that lost its detail.
- Alpha is flattened onto white before scoring, as a product is shown on a page.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

LOW, HIGH = 30, 95  # the quality range searched
DEFAULT_TARGET = 0.97  # chosen by looking at 100 % crops; see the README
MAX_TRIES = 7  # mosaic encodes per image at most (bisection needs 7 over LOW..HIGH)
CLOSE = 2  # stop when the lowest pass is this close above the highest fail
SLOPE = -0.02  # d log(1 - score) / d quality assumed before two scores give it
MAX_RAISES = 2  # full re-encodes when a WebP/AVIF output misses the target
RAISE_STEP = 4
TILE = 32  # px; a multiple of 16 keeps every tile on JPEG's 4:2:0 MCU grid
SAMPLE_PIXELS = 262_144  # analysed pixels at most (the issue allows up to 1 MP)
_C2 = (0.03 * 255) ** 2  # SSIM's contrast constant for 8-bit values
_FLAT = 4.0  # window variance under 2^2 (levels) in both images: a flat window


@dataclass(frozen=True)
class Sample:
    """Which part of an image is scored: all of it when small, else a lattice of tiles."""

    width: int
    height: int
    tiles: tuple[tuple[int, int], ...] | None  # top-left corners; None: the whole image

    @property
    def pixels(self) -> int:
        return self.width * self.height if self.tiles is None else len(self.tiles) * TILE**2


def plan_sample(width: int, height: int, budget: int = SAMPLE_PIXELS) -> Sample:
    """The whole image when it fits the budget, else every n-th tile in raster order."""
    if width * height <= budget or width < TILE or height < TILE:
        return Sample(width, height, None)
    cols, rows = width // TILE, height // TILE
    total = cols * rows
    keep = max(1, min(total, budget // TILE**2))
    stride = total / keep
    # Every stride-th tile in raster order: a staggered lattice over the whole picture.
    picks = sorted({int(i * stride + stride / 2) for i in range(keep)})
    return Sample(width, height, tuple(((p % cols) * TILE, (p // cols) * TILE) for p in picks))


def mosaic(im: Image.Image, sample: Sample) -> Image.Image:
    """The sampled tiles side by side in a near-square grid (the image itself when whole)."""
    if sample.tiles is None:
        return im
    cols = math.ceil(math.sqrt(len(sample.tiles)))
    rows = math.ceil(len(sample.tiles) / cols)
    out = Image.new(im.mode, (cols * TILE, rows * TILE))
    if im.mode == "P" and (palette := im.getpalette()) is not None:
        out.putpalette(palette)
    for i, (x, y) in enumerate(sample.tiles):
        out.paste(im.crop((x, y, x + TILE, y + TILE)), ((i % cols) * TILE, (i // cols) * TILE))
    return out


def _luma(im: Image.Image) -> Image.Image:
    if im.mode == "L":
        return im
    if im.has_transparency_data:
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", im.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat.convert("L")
    return im.convert("L")


def luma_tiles(tiles_im: Image.Image, sample: Sample) -> np.ndarray:
    """Luma of `mosaic(..)` (or of the whole image) as a float32 plane centred on 0."""
    return luma_plane(np.asarray(_luma(tiles_im)), sample)


def luma_plane(grid: np.ndarray, sample: Sample) -> np.ndarray:
    """`luma_tiles` of a mosaic's (or the whole image's) 8-bit luma plane, cropped to a
    multiple of 4. The tiles stay where the mosaic has them: `window_mask` tells which
    windows lie inside one, so no copy regroups them."""
    h, w = (grid.shape[0] // 4) * 4, (grid.shape[1] // 4) * 4
    return np.subtract(grid[:h, :w], 128.0, dtype=np.float32)


def luma_mosaic(luma: np.ndarray, sample: Sample) -> np.ndarray:
    """`mosaic` of an 8-bit luma plane (h, w): the same tiles in the same grid, by array
    indexing rather than one crop and paste per tile."""
    if sample.tiles is None:
        return luma
    cells = np.lib.stride_tricks.sliding_window_view(luma, (TILE, TILE))[::TILE, ::TILE]
    corners = np.array(sample.tiles) // TILE
    count = len(sample.tiles)
    grid_cols = math.ceil(math.sqrt(count))
    grid_rows = math.ceil(count / grid_cols)
    tiles = np.zeros((grid_rows * grid_cols, TILE, TILE), np.uint8)
    tiles[:count] = cells[corners[:, 1], corners[:, 0]]
    rows = tiles.reshape(grid_rows, grid_cols, TILE, TILE).swapaxes(1, 2)
    return rows.reshape(grid_rows * TILE, grid_cols * TILE)


def _windows(a: np.ndarray) -> np.ndarray:
    """Sums over 8x8 windows at stride 4 of a plane (both sides multiples of 4).

    Sums of 4x4 cells first, by adding strided views (numpy's reductions over several
    small axes are ten times slower), then 2x2 cells per window.
    """
    h, w = a.shape
    s = a.reshape(h, w // 4, 4)
    s = s[..., 0] + s[..., 1] + s[..., 2] + s[..., 3]
    s = s.reshape(h // 4, 4, w // 4)
    c = s[:, 0] + s[:, 1] + s[:, 2] + s[:, 3]
    return c[:-1, :-1] + c[1:, :-1] + c[:-1, 1:] + c[1:, 1:]


def window_mask(shape: tuple[int, ...], sample: Sample) -> np.ndarray | None:
    """Which windows of a mosaic plane lie inside one sampled tile (None: all of them,
    when the plane is the whole image). Windows across two tiles, or on the mosaic's
    unused corner, do not count."""
    if sample.tiles is None:
        return None
    per = TILE // 4  # 4x4 cells per tile side; window (i, j) covers cells i..i+1, j..j+1
    rows, cols = np.arange(shape[0] // 4 - 1), np.arange(shape[1] // 4 - 1)
    inside = (rows % per != per - 1)[:, None] & (cols % per != per - 1)[None, :]
    tile = (rows // per)[:, None] * (shape[1] // TILE) + (cols // per)[None, :]
    return inside & (tile < len(sample.tiles))


class Reference:
    """The input's sampled luma and its window statistics, computed once per image."""

    def __init__(self, plane: np.ndarray, sample: Sample | None = None) -> None:
        self.plane = plane
        self.usable = plane.shape[0] >= 8 and plane.shape[1] >= 8
        if self.usable:
            self.mask = None if sample is None else window_mask(plane.shape, sample)
            self.mean = _windows(plane) / 64.0
            self.var = _windows(plane * plane) / 64.0 - self.mean * self.mean

    def score(self, cand: np.ndarray) -> float:
        """SSIM contrast-structure of `cand` against the reference, mean over the windows
        not flat in both; 1.0 when every window is flat (or the image is under 8 px)."""
        if not self.usable:
            return 1.0
        my, yy, xy = (_windows(a) / 64.0 for a in (cand, cand * cand, self.plane * cand))
        vx, vy = self.var, yy - my * my
        active = np.maximum(vx, vy) > _FLAT
        if self.mask is not None:
            active &= self.mask
        if not active.any():
            return 1.0
        cxy = xy[active] - self.mean[active] * my[active]
        return float(((2 * cxy + _C2) / (vx[active] + vy[active] + _C2)).mean())


@dataclass
class Found:
    """The quality chosen, its score, and every quality tried with its score."""

    quality: int
    score: float
    tried: dict[int, float] = field(default_factory=dict)


def search(
    measure: Callable[[int], float],
    target: float,
    lo: int = LOW,
    hi: int = HIGH,
    max_tries: int = MAX_TRIES,
    close: int = CLOSE,
) -> Found:
    """The lowest quality in [lo, hi] whose score meets `target`, in at most `max_tries`
    calls of `measure` (one more to try `hi` if nothing tried passed). When even `hi`
    misses, `hi` is the answer."""
    tried: dict[int, float] = {}

    def gap(q: int) -> float:
        return math.log(max(1e-6, 1 - tried[q])) - math.log(max(1e-6, 1 - target))

    fail, ok = lo - 1, hi + 1  # highest failing and lowest passing quality known
    q, bisect = lo + (hi - lo) // 3, False
    while True:
        width = ok - fail
        tried[q] = measure(q)
        if tried[q] >= target:
            ok = q
        else:
            fail = q
        if ok - fail <= close or len(tried) >= max_tries:
            break
        if fail in tried and ok in tried and gap(ok) * (ok - fail) / (gap(fail) - gap(ok)) > -1:
            break  # interpolated between the two, the target is met less than a step below ok
        low, high = fail + 1, min(ok, hi + 1) - 1
        if bisect:
            q = (low + high) // 2
        else:  # secant through the two nearest points tried, else an assumed slope
            near = sorted(tried, key=lambda k: abs(k - q))[:2]
            slope = (gap(near[1]) - gap(near[0])) / (near[1] - near[0]) if len(near) == 2 else 0
            slope = slope if slope < -1e-3 else SLOPE
            q = min(high, max(low, round(q - gap(q) / slope)))
        bisect = not bisect and (ok - fail) * 2 > width  # the step did not halve the bracket
    if ok > hi:
        if hi not in tried:
            tried[hi] = measure(hi)
        return Found(hi, tried[hi], tried)
    return Found(ok, tried[ok], tried)


def decoded_luma(data: bytes, sample: Sample, *, whole: bool) -> np.ndarray:
    """Sampled luma of an encoded image (`whole`) or of an encoded mosaic of its sample.

    A JPEG decodes its Y channel only: no chroma upsampling, no colour conversion.
    """
    with Image.open(io.BytesIO(data)) as im:
        if im.format == "JPEG":
            im.draft("L", im.size)
        im.load()
        return luma_tiles(mosaic(im, sample) if whole else im, sample)


class Scorer:
    """Everything the search needs about one image (decoded, oriented, resized), once."""

    def __init__(self, im: Image.Image) -> None:
        self.sample = plan_sample(*im.size)
        self.tiles = mosaic(im, self.sample)
        self.reference = Reference(luma_tiles(self.tiles, self.sample), self.sample)

    def score_mosaic(self, data: bytes) -> float:
        return self.reference.score(decoded_luma(data, self.sample, whole=False))

    def score_image(self, data: bytes) -> float:
        """The score of an encoding of the whole image: what `quality=auto` promises."""
        return self.reference.score(decoded_luma(data, self.sample, whole=True))

    def find(self, encode: Callable[[Image.Image, int], bytes], target: float) -> Found:
        """Search with `encode(mosaic, quality)`; see `search`."""
        return search(lambda q: self.score_mosaic(encode(self.tiles, q)), target)
