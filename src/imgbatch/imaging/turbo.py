"""The libjpeg-turbo fast path for JPEG in, JPEG out, no resize: fewer steps per image.

Most catalogue photos arrive as JPEG and leave as JPEG at a fixed quality, unresized.
For those, Pillow's general path (decode to RGB, orient, convert, encode) does more
than needed. This module re-encodes them directly through libjpeg-turbo, by one of
two routes chosen per image by a pure rule (`route`) from the header alone:

- `DCT`: the optional C extension `_jpegdct` (built at install time when a compiler
  and the libjpeg-turbo headers are present) requantizes the DCT coefficients to the
  target tables, with no IDCT/DCT, colour conversion or chroma resampling at all.
  Only for 4:2:0 colour or greyscale, so the output sampling is what the general path
  makes.
- `PIXELS`: simplejpeg (libjpeg-turbo's TurboJPEG API) decodes to RGB or grey and
  encodes 4:2:0 at the quality, as Pillow would, with less overhead around the codec.

What the general path guarantees holds here too: EXIF, XMP, comments and the rest are
dropped, an ICC profile that describes the pixels is kept (its APP2 segments spliced in
unchanged), the output is never larger than the input (else the input comes back
stripped), and the displayed orientation is right because only orientation 1 or none
takes this path. Everything else -- CMYK/YCCK, RGB-coded JPEGs, 12-bit, lossless or
arithmetic-coded frames, odd samplings, EXIF rotations, a header this module cannot
read, an error from either codec -- goes to the general path, which decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

import simplejpeg

from . import jpegfacts
from .jpegfacts import JpegFacts, NotParsed
from .metadata import strip_jpeg

try:  # the optional accelerator; absent where no compiler or headers were at install
    from imgbatch.imaging import _jpegdct  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the install
    _jpegdct = None

DCT = "dct"
PIXELS = "pixels"
GENERAL = "general"  # Pillow's path in `compress`

# Annex K tables (natural order), scaled per quality as libjpeg's jpeg_set_quality does.
_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32  # fmt: skip
_FAST_FRAMES = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended, progressive (Huffman)
_PIXEL_LUMA_SAMPLING = frozenset({(1, 1), (2, 1), (1, 2), (2, 2)})  # 4:4:4 4:2:2 4:4:0 4:2:0
_ICC_SPACE = {1: "GRAY", 3: "RGB"}


@dataclass(frozen=True)
class FastResult:
    data: bytes
    width: int
    height: int
    kept_original: bool
    route: str


def dct_available() -> bool:
    """Whether the `_jpegdct` accelerator was built into this install."""
    return _jpegdct is not None


def applies(source: str | None, target: str, quality: object, resize: bool) -> bool:
    """Whether to try the fast path at all: JPEG to JPEG, a fixed quality or "auto"
    (searched by `autojpeg`), no resize."""
    fixed = isinstance(quality, int) and not isinstance(quality, bool)
    return (
        source == "jpeg"
        and target in ("keep", "jpeg")
        and (fixed or quality == "auto")
        and not resize
    )


def general_reason(facts: JpegFacts) -> str | None:
    """Why this JPEG must take the general path, or None when a fast route can take it."""
    if facts.frame not in _FAST_FRAMES:
        return "frame"  # lossless, hierarchical or arithmetic-coded
    if facts.precision != 8:
        return "precision"
    if facts.width < 1 or facts.height < 1:
        return "size"  # height defined later by a DNL marker
    if facts.orientation not in (None, 1):
        return "orientation"
    count = len(facts.components)
    if count == 1:
        return None
    if count != 3:
        return "colour"  # CMYK / YCCK (4) or something stranger
    if facts.adobe_transform == 0 or tuple(c.ident for c in facts.components) == (82, 71, 66):
        return "colour"  # RGB-coded, not YCbCr
    luma, cb, cr = facts.components
    if (cb.h, cb.v, cr.h, cr.v) != (1, 1, 1, 1) or (luma.h, luma.v) not in _PIXEL_LUMA_SAMPLING:
        return "sampling"
    return None


def route(facts: JpegFacts, dct_available: bool) -> str:
    """`DCT`, `PIXELS` or `GENERAL` for this header. Pure."""
    if general_reason(facts) is not None:
        return GENERAL
    if dct_available and (
        len(facts.components) == 1 or (facts.components[0].h, facts.components[0].v) == (2, 2)
    ):
        return DCT
    return PIXELS


@cache
def target_tables(quality: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The luma and chroma tables libjpeg uses at `quality` (baseline: at most 255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality

    def scaled(table: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(min(255, max(1, (v * scale + 50) // 100)) for v in table)

    return scaled(_LUMA), scaled(_CHROMA)


def requantized_table(source: tuple[int, ...], target: tuple[int, ...]) -> tuple[int, ...]:
    """Per entry the coarser of the two: a finer quantizer than the input's adds bytes
    and no detail, so where the input is already coarser its coefficients stay as they are."""
    return tuple(max(s, t) for s, t in zip(source, target, strict=True))


def requantizes(facts: JpegFacts, quality: int) -> bool:
    """Whether the target tables are coarser than the input's anywhere. If not, the DCT
    route would keep every coefficient: the image stays as it is (stripped), like the
    general path's re-encode that cannot shrink it, and its quality is not reported."""
    luma, chroma = target_tables(quality)
    for index, component in enumerate(facts.components):
        table = facts.tables.get(component.table)
        if table is None or _coarsens(table, luma if index == 0 else chroma):
            return True
    return False


@lru_cache(maxsize=256)  # a catalogue's photos share a few tables: this runs once per table
def _coarsens(table: tuple[int, ...], target: tuple[int, ...]) -> bool:
    return requantized_table(table, target) != table


def keeps_icc(facts: JpegFacts) -> bool:
    """The ICC profile stays when it describes the output pixels (RGB or grey)."""
    return facts.icc_space is not None and facts.icc_space == _ICC_SPACE.get(len(facts.components))


def splice_segments(jpeg: bytes, segments: tuple[bytes, ...]) -> bytes:
    """Insert whole marker segments after SOI and a leading JFIF APP0, bytes unchanged."""
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":
        pos = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:pos] + b"".join(segments) + jpeg[pos:]


def prepare(data: bytes, max_pixels: int) -> tuple[JpegFacts, str] | None:
    """The header facts and the fast route for this JPEG, or None for the general path."""
    try:
        facts = jpegfacts.parse(data)
    except NotParsed:
        return None
    if facts.width * facts.height > max_pixels:
        return None  # the general path reports the limit
    chosen = route(facts, dct_available())
    return None if chosen == GENERAL else (facts, chosen)


def encode(data: bytes, facts: JpegFacts, chosen: str, quality: int) -> FastResult | None:
    """`data` re-encoded at `quality` by the route `prepare` chose, or None when a codec
    refuses it (the general path then decides, and reports any error)."""
    if chosen == DCT and not requantizes(facts, quality):
        return FastResult(strip_jpeg(data), facts.width, facts.height, True, chosen)
    try:
        if chosen == DCT:
            luma, chroma = target_tables(quality)
            encoded = _jpegdct.requantize(data, luma, chroma)
        else:
            encoded = _reencode(data, quality, grey=len(facts.components) == 1)
    except ValueError:  # a codec refused the data (corrupt, truncated): the general path decides
        return None
    if keeps_icc(facts):
        encoded = splice_segments(encoded, facts.icc_segments)
    if len(encoded) >= len(data):
        return FastResult(strip_jpeg(data), facts.width, facts.height, True, chosen)
    return FastResult(encoded, facts.width, facts.height, False, chosen)


def compress_jpeg(data: bytes, quality: int, max_pixels: int) -> FastResult | None:
    """The re-encoded JPEG, or None when the general path must handle this image
    (it then also produces any error the image deserves)."""
    prepared = prepare(data, max_pixels)
    return None if prepared is None else encode(data, *prepared, quality)


def _reencode(data: bytes, quality: int, grey: bool) -> bytes:
    space = "GRAY" if grey else "RGB"
    pixels = simplejpeg.decode_jpeg(data, colorspace=space, strict=True)
    return bytes(
        simplejpeg.encode_jpeg(pixels, quality=quality, colorspace=space, colorsubsampling="420")
    )
