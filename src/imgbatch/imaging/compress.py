"""Compress one image: bytes and options in, bytes and facts out. Pure, no I/O.

Processing is an ordered tuple of small steps over a context (`_PIPELINE`); each
step returns early when it does not apply. Limits come before work: the format
is sniffed from magic bytes and the pixel count is read from the header
(`formats`) before Pillow allocates or decodes anything.

Encoder settings below were chosen by measurement (`python bench/compress.py
--sweep`, one thread, 2 MP photographs); their comments say what the
alternatives cost.

What comes out: JPEG, WebP and AVIF re-encoded at the requested quality, or with
`quality="auto"` at the lowest quality that still meets a perceptual target
(`autoquality`; JPEG to JPEG without resizing searches on the luma plane alone and
encodes through the fast path, `autojpeg`); PNG quantized to a 256-colour palette (alpha kept) when that shrinks
it, else re-saved losslessly (quality 100: lossless only); GIF as its first frame.
EXIF orientation is applied; then, given a box, the image is scaled down to fit inside
it (`resizing`: JPEG decoded at reduced scale first). EXIF, XMP and comments are
dropped; an ICC profile is kept when it still describes the pixels (CMYK becomes sRGB).
When nothing shrinks the input and it fits the box, the original bytes come back
unchanged (metadata included); an image that did not fit the box is always resized.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from PIL import AvifImagePlugin, ExifTags, Image, ImageCms

from imgbatch.errors import ImageFailure

from . import autojpeg, encoders, turbo
from .autoquality import HIGH, MAX_RAISES, RAISE_STEP, Scorer
from .encoders import PILLOW_NAMES
from .formats import header_size, jpeg_scans, refused_format, sniff_format
from .metadata import strip_metadata
from .options import (
    _MAX_SIDE,
    AUTO,
    CONTENT_TYPES,
    EXTENSIONS,
    LOSSY,
    CompressOptions,
    CompressResult,
)
from .resizing import displayed_size, downscale, fit_within

# Progressive JPEGs with more scans are refused before decoding (`too_complex`): libjpeg
# passes over every block once per scan, so 15,000 tiny scans made a 1.3 MB file cost
# hours of CPU. Encoders write 1 (baseline) to about 10 scans; libjpeg-turbo's own
# tools suggest refusing more than 100 (djpeg -maxscans, TJPARAM_SCANLIMIT).
MAX_JPEG_SCANS = 100

# Keep freed 16 MiB image blocks for reuse (RSS up to +128 MiB): in a fresh process
# JPEG 12 MP 62 -> 44 ms, WebP 2 MP 75 -> 58 ms; PNG -3 %, AVIF unchanged.
BLOCKS_MAX = 8


def configure() -> None:
    """One-time process setup; safe to call repeatedly. Process-global, not per thread.

    Keeps up to `BLOCKS_MAX` freed image blocks for reuse, which saves the page
    faults of mapping fresh memory for every image, and runs AVIF single-threaded
    because the worker already runs one process per core.
    """
    Image.core.set_blocks_max(BLOCKS_MAX)
    AvifImagePlugin.DEFAULT_MAX_THREADS = 1


# --- the pipeline ----------------------------------------------------------


@dataclass
class _Context:
    data: bytes
    options: CompressOptions
    source: str = ""  # sniffed input format
    target: str = ""  # format to encode
    image: Image.Image | None = None
    icc_profile: bytes | None = None
    encoded: bytes | None = None
    kept_original: bool = False
    oriented: bool = False  # the EXIF orientation tag asked for a rotation or flip
    orientation: int | None = None  # the EXIF orientation tag, read before decoding
    fit: tuple[int, int] | None = None  # displayed size to scale down to, if any
    quality: int | None = None  # the quality lossy outputs are encoded with
    scorer: Scorer | None = None  # quality=auto: the input's reference, kept for checks

    @property
    def im(self) -> Image.Image:
        assert self.image is not None, "step ran before the image was opened"
        return self.image


def _too_many_pixels(width: int, height: int, limit: int) -> ImageFailure:
    return ImageFailure(
        "too_many_pixels", f"image is {width}x{height}, more than {limit:,} pixels allowed"
    )


def _sniff(ctx: _Context) -> None:
    fmt = sniff_format(ctx.data)
    if fmt is not None:
        ctx.source = fmt
        return
    refused = refused_format(ctx.data)
    if refused is not None:
        raise ImageFailure(
            "unsupported_format", f"{refused} is not accepted; use JPEG, PNG, WebP, GIF or AVIF"
        )
    raise ImageFailure("not_an_image", "the content is not an image")


def _limit_header(ctx: _Context) -> None:
    size = header_size(ctx.data, ctx.source)
    if size is not None and size[0] * size[1] > ctx.options.max_pixels:
        raise _too_many_pixels(*size, ctx.options.max_pixels)


def _limit_scans(data: bytes) -> None:
    """Refuse a JPEG with too many scans before any decoder, the fast path's too, sees it."""
    if sniff_format(data) != "jpeg":
        return
    scans = jpeg_scans(data, stop_after=MAX_JPEG_SCANS + 1)
    if scans > MAX_JPEG_SCANS:
        raise ImageFailure(
            "too_complex",
            f"progressive JPEG with more than {MAX_JPEG_SCANS} scans; "
            "decoding it would cost far more than its size suggests",
        )


def _open(ctx: _Context) -> None:
    # Parses the header only; errors are mapped by `compress`.
    ctx.image = Image.open(io.BytesIO(ctx.data), formats=[PILLOW_NAMES[ctx.source]])


def _limit_pixels(ctx: _Context) -> None:
    width, height = ctx.im.size
    if width * height > ctx.options.max_pixels:
        raise _too_many_pixels(width, height, ctx.options.max_pixels)


def _read_orientation(ctx: _Context) -> None:
    try:
        orientation = ctx.im.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # unreadable EXIF: nothing to apply, and it is stripped anyway
        return
    ctx.orientation = orientation if isinstance(orientation, int) else None


def _plan_fit(ctx: _Context) -> None:
    """The box applies to the displayed image; a JPEG reduced 2x or more decodes at
    1/2, 1/4 or 1/8 scale in the DCT domain (never below the final size)."""
    options = ctx.options
    if options.max_width is None and options.max_height is None:
        return
    shown = displayed_size(*ctx.im.size, ctx.orientation)
    ctx.fit = fit_within(*shown, options.max_width, options.max_height)
    if ctx.fit is not None and ctx.source == "jpeg":
        ctx.im.draft(None, displayed_size(*ctx.fit, ctx.orientation))


def _choose_target(ctx: _Context) -> None:
    target = ctx.source if ctx.options.format == "keep" else ctx.options.format
    # A format that cannot hold the image falls back to the source format.
    size = ctx.fit or ctx.im.size
    ctx.target = target if max(size) <= _MAX_SIDE[target] else ctx.source


def _decode(ctx: _Context) -> None:
    ctx.im.load()  # the first frame only; LOAD_TRUNCATED_IMAGES stays False
    ctx.icc_profile = ctx.im.info.get("icc_profile") or None


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orient(ctx: _Context) -> None:
    method = _TRANSPOSE.get(ctx.orientation) if ctx.orientation is not None else None
    if method is None:
        return
    ctx.image = ctx.im.transpose(method)
    ctx.oriented = True


@cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _cmyk_to_rgb(ctx: _Context) -> None:
    if ctx.im.mode != "CMYK":
        return
    icc, ctx.icc_profile = ctx.icc_profile, None  # the output is sRGB, untagged
    if icc is not None and _icc_space(icc) == "CMYK":
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            ctx.image = ImageCms.profileToProfile(ctx.im, source, _srgb(), outputMode="RGB")
            return
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to the naive conversion
    ctx.image = ctx.im.convert("RGB")


def _to_8_bit(ctx: _Context) -> None:
    mode = ctx.im.mode
    if mode.startswith("I"):  # 16-bit grey PNG: scale, as convert("L") would clip
        ctx.image = ctx.im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif mode == "F":
        ctx.image = ctx.im.convert("L")
    else:
        return
    ctx.image.info.pop("transparency", None)  # a 16-bit colour key no longer applies


def _drop_opaque_alpha(ctx: _Context) -> None:
    mode = ctx.im.mode
    if mode not in ("RGBA", "LA") or ctx.im.getchannel("A").getextrema() != (255, 255):
        return
    ctx.image = ctx.im.convert(mode[:-1])


def _resize(ctx: _Context) -> None:
    if ctx.fit is not None:
        ctx.image = downscale(ctx.im, ctx.fit)


def _fit_mode(ctx: _Context) -> None:
    """Give the target encoder a mode it takes: flatten alpha for JPEG, expand palettes."""
    im, target = ctx.im, ctx.target
    if target == "gif" or (target == "png" and im.mode in ("1", "L", "LA", "P", "RGB", "RGBA")):
        return
    alpha = im.has_transparency_data
    grey = im.mode in ("1", "L", "LA")
    if target == "jpeg":
        if alpha:
            rgba = im.convert("RGBA")
            flat = Image.new("RGB", im.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            ctx.image = flat.convert("L") if grey else flat
        elif im.mode not in ("L", "RGB"):
            ctx.image = im.convert("L" if grey else "RGB")
        return
    if target == "avif" and im.mode == "L":
        return  # AVIF stores grey as 4:0:0
    wanted = "RGBA" if alpha else "RGB"
    if im.mode != wanted:
        ctx.image = im.convert(wanted)


def _icc_space(icc: bytes) -> str:
    return icc[16:20].decode("latin-1").strip().upper()


_ICC_SPACE_OF_MODE = {"1": "GRAY", "L": "GRAY", "LA": "GRAY", "P": "RGB", "RGB": "RGB"}


def _strip_metadata(ctx: _Context) -> None:
    """Drop EXIF, XMP, comments and the rest; keep the ICC profile if it fits the pixels."""
    kept: dict[str | tuple[int, int], Any] = {}
    if ctx.icc_profile and _icc_space(ctx.icc_profile) == _ICC_SPACE_OF_MODE.get(
        ctx.im.mode, "RGB"
    ):
        kept["icc_profile"] = ctx.icc_profile
    else:
        ctx.icc_profile = None  # e.g. a grey profile on pixels expanded to RGB
    if "transparency" in ctx.im.info and ctx.im.mode in ("1", "L", "P", "RGB"):
        kept["transparency"] = ctx.im.info["transparency"]
    ctx.im.info = kept


def _quantize_png(ctx: _Context) -> None:
    """PNG: a palette of `encoders.PNG_COLOURS` (transparency kept) when that shrinks the input."""
    lossless = ctx.options.quality != AUTO and ctx.options.quality == 100
    if ctx.target != "png" or lossless or ctx.im.mode not in ("RGB", "RGBA"):
        return
    palette = ctx.im.quantize(encoders.PNG_COLOURS, method=encoders.PNG_QUANTIZE)
    if ctx.im.mode == "RGBA":
        encoders.snap_alpha(palette)
    encoded = encoders.save(
        palette, "png", ctx.icc_profile, compress_level=encoders.PNG_COMPRESS_LEVEL
    )
    if len(encoded) < len(ctx.data):
        ctx.encoded = encoded


def _pick_quality(ctx: _Context) -> None:
    """A fixed quality, or `auto`: the lowest that meets the target (`autoquality`)."""
    if ctx.encoded is not None or ctx.target not in LOSSY:
        return
    if ctx.options.quality != AUTO:
        ctx.quality = int(ctx.options.quality)
        return
    ctx.scorer = Scorer(ctx.im)
    target = ctx.target
    found = ctx.scorer.find(lambda im, q: encoders.lossy(im, target, q), ctx.options.auto_target)
    ctx.quality = found.quality


def _encode(ctx: _Context) -> None:
    if ctx.encoded is not None:
        return
    icc = ctx.icc_profile
    if ctx.quality is not None:
        ctx.encoded = encoders.lossy(ctx.im, ctx.target, ctx.quality, icc)
    elif ctx.target == "png":  # lossless: quantizing did not apply or did not shrink it
        ctx.encoded = encoders.save(ctx.im, "png", icc, compress_level=encoders.PNG_COMPRESS_LEVEL)
    else:
        ctx.encoded = encoders.save(ctx.im, "gif", None)


def _check_auto(ctx: _Context) -> None:
    """WebP and AVIF were searched on a mosaic, which they code a little differently from
    the whole image: score the real output and raise the quality while it misses.
    (JPEG codes the mosaic's tiles exactly as in the image; see `autoquality`. The
    requantized JPEGs of the fast path are checked in `autojpeg`.)"""
    if ctx.scorer is None or ctx.target == "jpeg" or ctx.encoded is None:
        return
    assert ctx.quality is not None
    for _ in range(MAX_RAISES):
        if ctx.quality >= HIGH or ctx.scorer.score_image(ctx.encoded) >= ctx.options.auto_target:
            return
        ctx.quality = min(HIGH, ctx.quality + RAISE_STEP)
        ctx.encoded = encoders.lossy(ctx.im, ctx.target, ctx.quality, ctx.icc_profile)


def _never_larger(ctx: _Context) -> None:
    if ctx.fit is not None:  # the original does not fit the box: the resized one it is
        return
    if ctx.encoded is not None and len(ctx.encoded) < len(ctx.data):
        return
    # Keep the original pixels, but not its EXIF/XMP/comments (GPS, serial numbers) —
    # unless the EXIF orientation is what makes it display upright.
    kept = ctx.data if ctx.oriented else strip_metadata(ctx.data, ctx.source)
    ctx.encoded, ctx.kept_original = kept, True


_PIPELINE: tuple[Callable[[_Context], None], ...] = (
    _sniff,
    _limit_header,
    _open,
    _limit_pixels,
    _read_orientation,
    _plan_fit,
    _choose_target,
    _decode,
    _orient,
    _cmyk_to_rgb,
    _to_8_bit,
    _drop_opaque_alpha,
    _resize,
    _fit_mode,
    _strip_metadata,
    _quantize_png,
    _pick_quality,
    _encode,
    _check_auto,
    _never_larger,
)


def compress(data: bytes, options: CompressOptions = CompressOptions()) -> CompressResult:
    """Re-encode `data` per `options`; never returns more bytes than it was given.

    Raises `ImageFailure` with code `not_an_image`, `unsupported_format`,
    `too_many_pixels`, `too_complex` or `corrupt_image` (`internal` if an encoder fails).
    """
    _limit_scans(data)
    fast = _fast_jpeg(data, options)
    if fast is not None:
        return fast
    ctx = _Context(data, options)
    try:
        for step in _PIPELINE:
            step(ctx)
    except (ImageFailure, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageFailure("too_many_pixels", "image has too many pixels") from exc
    except Exception as exc:  # any Pillow/codec error while reading the input
        raise ImageFailure("corrupt_image", f"cannot decode this {ctx.source} image") from exc
    assert ctx.encoded is not None
    fmt = ctx.source if ctx.kept_original else ctx.target
    width, height = ctx.im.size
    return CompressResult(
        data=ctx.encoded,
        format=fmt,
        content_type=CONTENT_TYPES[fmt],
        extension=EXTENSIONS[fmt],
        width=width,
        height=height,
        bytes_in=len(data),
        bytes_out=len(ctx.encoded),
        kept_original=ctx.kept_original,
        quality=None if ctx.kept_original else ctx.quality,
        resized=ctx.fit is not None,
    )


def _may_resize(data: bytes, options: CompressOptions) -> bool:
    """Whether a box is set that the JPEG may not fit in either orientation (the EXIF one
    is not read here): such an image takes the pipeline, which resizes."""
    if options.max_width is None and options.max_height is None:
        return False
    size = header_size(data, "jpeg")
    if size is None:
        return True
    w, h = size
    box = (options.max_width, options.max_height)
    return fit_within(w, h, *box) is not None or fit_within(h, w, *box) is not None


def _fast_jpeg(data: bytes, options: CompressOptions) -> CompressResult | None:
    """JPEG to JPEG at a fixed quality or "auto" (`autojpeg`), no resize: libjpeg-turbo
    directly (`turbo`), with the same guarantees; None sends the image through `_PIPELINE`."""
    if not options.jpeg_fast_path or not turbo.applies(
        sniff_format(data), options.format, options.quality, _may_resize(data, options)
    ):
        return None
    quality = options.quality
    if quality == AUTO:  # searched on the luma plane, encoded as a fixed quality would be
        found = autojpeg.compress_auto(data, options.auto_target, options.max_pixels)
        if found is None:
            return None
        fast, quality = found
    else:
        assert isinstance(quality, int)
        fast_fixed = turbo.compress_jpeg(data, quality, options.max_pixels)
        if fast_fixed is None:
            return None
        fast = fast_fixed
    return CompressResult(
        data=fast.data,
        format="jpeg",
        content_type=CONTENT_TYPES["jpeg"],
        extension=EXTENSIONS["jpeg"],
        width=fast.width,
        height=fast.height,
        bytes_in=len(data),
        bytes_out=len(fast.data),
        kept_original=fast.kept_original,
        quality=None if fast.kept_original else quality,
    )
