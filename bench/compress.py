"""Benchmark `imgbatch.imaging.compress` against the libraries it could have used.

Not a test. Builds real photographs from `skimage.data` (astronaut, coffee, chelsea,
rocket) scaled to each size, saves them as JPEG q90, PNG and WebP q90 (plus a PNG
graphic with real alpha), then times decode + re-encode at q50, one thread, and
prints per variant and size: median ms per image, ms per megapixel and the
output/input size ratio, then our time over the fastest alternative in the same run.

    .venv/bin/python bench/compress.py                 # ~1-2 minutes
    .venv/bin/python bench/compress.py --sizes 2 --repeat 5
    .venv/bin/python bench/compress.py --sweep         # encoder settings (WebP method,
                                                       # AVIF speed, PNG quantizers...)
    .venv/bin/python bench/compress.py --blocks-max 0  # without configure()'s block cache
    .venv/bin/python bench/compress.py --resize        # 12 MP JPEG to fit 2000x2000: full
                                                       # decode vs DCT-scaled decode (draft)

Upscaled photographs are smoother than camera output, so absolute sizes are
optimistic; the comparisons between variants are what this is for.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("VIPS_CONCURRENCY", "1")  # one thread, like one worker process

import numpy as np
import pyvips
import simplejpeg
import skimage.data
from PIL import AvifImagePlugin, Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from imgbatch import imaging

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
Q = 50
Encoder = Callable[[bytes], bytes]


@dataclass
class Source:
    name: str
    mp: float
    data: bytes


@dataclass
class Row:
    section: str
    variant: str
    mp: float
    cpu_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms_per_mp: list[float] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0


# --- inputs ------------------------------------------------------------------


def scaled(im: Image.Image, mp: float) -> Image.Image:
    s = (mp * 1e6 / (im.width * im.height)) ** 0.5
    return im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)


def graphic_with_alpha() -> Image.Image:
    """skimage's logo with its white background turned into real (soft-edged) alpha."""
    rgb = skimage.data.logo()[..., :3].astype(np.float32)
    alpha = (255 - rgb).max(axis=2) / 255
    safe = np.maximum(alpha, 1e-6)[..., None]
    colour = np.clip((rgb - 255 * (1 - safe)) / safe, 0, 255)
    rgba = np.dstack([colour, alpha * 255]).round().astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def build_sources(mp: float, count: int) -> dict[str, list[Source]]:
    photos = [(n, scaled(Image.fromarray(getattr(skimage.data, n)()), mp)) for n in PHOTOS]
    photos = photos[:count]
    logo = scaled(graphic_with_alpha(), mp)
    return {
        "jpeg": [Source(n, mp, encode(im, "JPEG", quality=90)) for n, im in photos],
        "png": [Source(n, mp, encode(im, "PNG")) for n, im in photos],
        "png-alpha": [Source("logo", mp, encode(logo, "PNG"))],
        "webp": [Source(n, mp, encode(im, "WEBP", quality=90)) for n, im in photos],
    }


# --- variants ----------------------------------------------------------------


def ours(fmt: str = "keep") -> Encoder:
    options = imaging.CompressOptions(quality=Q, format=fmt)
    return lambda src: imaging.compress(src, options).data


def pillow(fmt: str, **params: object) -> Encoder:
    def run(src: bytes) -> bytes:
        im = Image.open(io.BytesIO(src))
        im.load()
        return encode(im, fmt, **params)

    return run


def pillow_palette(method: Image.Quantize) -> Encoder:
    def run(src: bytes) -> bytes:
        im = Image.open(io.BytesIO(src))
        im.load()
        return encode(im.quantize(256, method=method), "PNG", compress_level=6)

    return run


def simplejpeg_q50(src: bytes) -> bytes:
    return simplejpeg.encode_jpeg(simplejpeg.decode_jpeg(src), quality=Q, colorsubsampling="420")


def vips(saver: str, **params: object) -> Encoder:
    def run(src: bytes) -> bytes:
        im = pyvips.Image.new_from_buffer(src, "", access="sequential")
        return getattr(im, saver)(**params)

    return run


# (section, variant, encoder, slow: skipped above 2 MP unless --all)
MAIN: list[tuple[str, str, Encoder, bool]] = [
    ("jpeg", "imgbatch.compress", ours(), False),
    ("jpeg", "pillow", pillow("JPEG", quality=Q), False),
    ("jpeg", "pillow optimize", pillow("JPEG", quality=Q, optimize=True), False),
    ("jpeg", "simplejpeg", simplejpeg_q50, False),
    ("jpeg", "pyvips", vips("jpegsave_buffer", Q=Q), False),
    ("jpeg>avif", "imgbatch.compress", ours("avif"), False),
    ("jpeg>avif", "pillow speed 6", pillow("AVIF", quality=Q, speed=6), True),
    ("png", "imgbatch.compress", ours(), False),
    ("png", "pillow fastoctree", pillow_palette(Image.Quantize.FASTOCTREE), False),
    ("png", "pillow mediancut", pillow_palette(Image.Quantize.MEDIANCUT), True),
    ("png", "pyvips imagequant e1", vips("pngsave_buffer", palette=True, effort=1), True),
    ("png-alpha", "imgbatch.compress", ours(), False),
    ("png-alpha", "pillow fastoctree", pillow_palette(Image.Quantize.FASTOCTREE), False),
    ("png-alpha", "pyvips imagequant e1", vips("pngsave_buffer", palette=True, effort=1), True),
    ("webp", "imgbatch.compress", ours(), False),
    ("webp", "pillow method 4", pillow("WEBP", quality=Q), False),
    ("webp", "pillow method 2", pillow("WEBP", quality=Q, method=2), False),
    ("webp", "pyvips", vips("webpsave_buffer", Q=Q), False),
]


def timed(fn: Encoder, data: bytes) -> tuple[float, float, bytes]:
    """CPU ms (all threads of the process), wall ms, output."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(data)
    return (time.process_time() - c0) * 1000, (time.perf_counter() - t0) * 1000, out


def measure(section: str, variant: str, fn: Encoder, sources: list[Source], repeat: int) -> Row:
    row = Row(section, variant, sources[0].mp)
    gc.collect()
    for i, src in enumerate(sources):
        cpu, wall, out = timed(fn, src.data)  # warm-up, and the output size
        row.bytes_in += len(src.data)
        row.bytes_out += len(out)
        if cpu < 300:
            samples = [timed(fn, src.data)[:2] for _ in range(repeat)]
        elif i == 0:  # slow: one timed run once warm
            samples = [timed(fn, src.data)[:2]]
        else:  # slow and already warm: the first run is the sample
            samples = [(cpu, wall)]
        for cpu, wall in samples:
            row.cpu_ms.append(cpu)
            row.wall_ms.append(wall)
            row.cpu_ms_per_mp.append(cpu / src.mp)
    return row


def print_rows(rows: list[Row]) -> None:
    print("median per image; CPU time of the whole process (wall time is noisy on a shared box")
    print("and pyvips runs a second thread); ms/MP is CPU ms per megapixel")
    print(
        f"{'input':10} {'variant':22} {'MP':>5} {'cpu ms':>9} {'wall ms':>9} {'ms/MP':>7} "
        f"{'out/in':>7}"
    )
    for r in rows:
        print(
            f"{r.section:10} {r.variant:22} {r.mp:5.1f} {statistics.median(r.cpu_ms):9.1f} "
            f"{statistics.median(r.wall_ms):9.1f} {statistics.median(r.cpu_ms_per_mp):7.2f} "
            f"{r.bytes_out / r.bytes_in:7.3f}"
        )


def print_ratios(rows: list[Row]) -> None:
    print("\nimgbatch.compress vs the fastest alternative in this run (CPU time; sizes out/in)")
    keys = sorted({(r.section, r.mp) for r in rows}, key=lambda k: (k[0], k[1]))
    for section, mp in keys:
        group = [r for r in rows if r.section == section and r.mp == mp]
        mine = [r for r in group if r.variant == "imgbatch.compress"]
        others = [r for r in group if r.variant != "imgbatch.compress"]
        if not mine or not others:
            continue
        best = min(others, key=lambda r: statistics.median(r.cpu_ms))
        ours_ms, best_ms = statistics.median(mine[0].cpu_ms), statistics.median(best.cpu_ms)
        print(
            f"  {section:10} {mp:5.1f} MP: {ours_ms:8.1f} ms / {best_ms:8.1f} ms "
            f"({best.variant}) = {ours_ms / best_ms:5.2f}x   sizes "
            f"{mine[0].bytes_out / mine[0].bytes_in:.3f} vs {best.bytes_out / best.bytes_in:.3f}"
        )


# --- settings sweep ------------------------------------------------------------


def psnr(reference: Image.Image, data: bytes) -> float:
    """PSNR of premultiplied RGBA: the colour of a transparent pixel does not count."""

    def premultiplied(im: Image.Image) -> np.ndarray:
        a = np.asarray(im.convert("RGBA"), dtype=np.float32)
        return np.dstack([a[..., :3] * a[..., 3:] / 255, a[..., 3:]])

    a = premultiplied(reference)
    b = premultiplied(Image.open(io.BytesIO(data)))
    mse = float(((a - b) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


ImageEncoder = Callable[[Image.Image], bytes]


def sweep(repeat: int, count: int) -> None:
    """Encoder settings on decoded 2 MP images: median CPU ms, bytes vs the first, PSNR."""
    photos = [scaled(Image.fromarray(getattr(skimage.data, n)()), 2) for n in PHOTOS[:count]]
    logo = scaled(graphic_with_alpha(), 2)

    def pil(fmt: str, **params: object) -> ImageEncoder:
        return lambda im: encode(im, fmt, **params)

    def palette(method: Image.Quantize, level: int = 6) -> ImageEncoder:
        return lambda im: encode(im.quantize(256, method=method), "PNG", compress_level=level)

    def imagequant(effort: int, dither: float) -> ImageEncoder:
        return lambda im: pyvips.Image.new_from_array(
            np.asarray(im), interpretation="srgb"
        ).pngsave_buffer(palette=True, effort=effort, dither=dither)

    def sj(im: Image.Image) -> bytes:
        return simplejpeg.encode_jpeg(np.asarray(im), quality=Q, colorsubsampling="420")

    octree, median, coverage = (
        Image.Quantize.FASTOCTREE,
        Image.Quantize.MEDIANCUT,
        Image.Quantize.MAXCOVERAGE,
    )
    jpeg = {
        "baseline": pil("JPEG", quality=Q),
        "optimize": pil("JPEG", quality=Q, optimize=True),
        "progressive": pil("JPEG", quality=Q, progressive=True),
        "simplejpeg 4:2:0": sj,
    }
    webp = {f"method {m}": pil("WEBP", quality=Q, method=m) for m in range(7)}
    avif = {f"speed {s}": pil("AVIF", quality=Q, speed=s) for s in (5, 6, 7, 8, 9, 10)}
    png = {
        "lossless level 1": pil("PNG", compress_level=1),
        "lossless level 6": pil("PNG", compress_level=6),
        "lossless optimize (level 9)": pil("PNG", optimize=True),
        "fastoctree + level 6": palette(octree),
        "fastoctree + level 9": palette(octree, 9),
        "libimagequant (vips) e1 d0": imagequant(1, 0.0),
        "libimagequant (vips) e1 d1": imagequant(1, 1.0),
        "libimagequant (vips) e7 d1": imagequant(7, 1.0),
    }
    rgb_only = {"mediancut + level 6": palette(median), "maxcoverage + level 6": palette(coverage)}
    sweep_table("JPEG q50", photos, jpeg, repeat)
    sweep_table("WebP q50 method", photos, webp, repeat)
    sweep_table("AVIF q50 speed", photos, avif, repeat)
    sweep_table("PNG photo", photos[:2], {**png, **rgb_only}, repeat)
    sweep_table("PNG graphic with alpha", [logo], png, repeat)


def sweep_table(
    title: str, images: list[Image.Image], cases: dict[str, ImageEncoder], repeat: int
) -> None:
    print(f"\n{title} (2 MP, {len(images)} image(s), one thread)")
    print(f"  {'setting':30} {'ms':>8} {'bytes':>10} {'vs first':>8} {'PSNR':>6}")
    base = 0
    for name, fn in cases.items():
        times, size, quality = [], 0, []
        for im in images:
            out = fn(im)  # warm-up
            size += len(out)
            quality.append(psnr(im, out))
            times.append(_cpu_seconds(fn, im))
            if times[-1] < 0.3:  # slow settings: one timed run per image
                times += [_cpu_seconds(fn, im) for _ in range(repeat - 1)]
        base = base or size
        print(
            f"  {name:30} {statistics.median(times) * 1000:8.1f} {size // len(images):10d} "
            f"{size / base:8.3f} {statistics.mean(quality):6.2f}"
        )


def _cpu_seconds(fn: ImageEncoder, im: Image.Image) -> float:
    t0 = time.process_time()
    fn(im)
    return time.process_time() - t0


# --- resizing: full decode vs scaled decode -------------------------------------


def resize_bench(repeat: int, count: int) -> None:
    """12 MP JPEG (4000x3000, q90) to fit 2000x2000 (and 1600x1600, where the scaled decode
    stops at 2000x1500 and Lanczos finishes): CPU ms per image for a full decode + Lanczos
    vs a DCT-scaled decode (`draft`) + Lanczos, and imgbatch end to end; PSNR of the
    scaled route's pixels against the full route's."""
    from imgbatch.imaging.resizing import downscale, fit_within

    photos = [Image.fromarray(getattr(skimage.data, n)()) for n in PHOTOS[:count]]
    sources = [
        encode(im.resize((4000, 3000), Image.Resampling.LANCZOS), "JPEG", quality=90)
        for im in photos
    ]
    for box in (2000, 1600):
        fit = fit_within(4000, 3000, box, box)
        assert fit is not None
        resize_case(sources, box, fit, repeat, downscale)


def resize_case(
    sources: list[bytes],
    box: int,
    fit: tuple[int, int],
    repeat: int,
    downscale: Callable[[Image.Image, tuple[int, int]], Image.Image],
) -> None:
    def full(src: bytes) -> Image.Image:
        im = Image.open(io.BytesIO(src))
        im.load()
        return im.resize(fit, Image.Resampling.LANCZOS)

    def scaled_decode(src: bytes) -> Image.Image:
        im = Image.open(io.BytesIO(src))
        im.draft(None, fit)  # libjpeg's scaled IDCT: 1/2, 1/4 or 1/8, never below `fit`
        im.load()
        return downscale(im, fit)

    options = imaging.CompressOptions(quality=Q, max_width=box, max_height=box)
    variants: dict[str, Callable[[bytes], object]] = {
        "full decode + Lanczos": full,
        "scaled decode + Lanczos": scaled_decode,
        "imgbatch.compress (q50 out)": lambda src: imaging.compress(src, options),
    }
    print(
        f"12 MP JPEG q90 -> fit {box}x{box} ({fit[0]}x{fit[1]}), {len(sources)} photos, "
        f"median CPU ms per image of {repeat} runs"
    )
    results: dict[str, float] = {}
    for name, fn in variants.items():
        times = []
        for src in sources:
            fn(src)  # warm-up
            for _ in range(repeat):
                t0 = time.process_time()
                fn(src)
                times.append((time.process_time() - t0) * 1000)
        results[name] = statistics.median(times)
        print(f"  {name:30} {results[name]:8.1f} ms")
    ratio = results["scaled decode + Lanczos"] / results["full decode + Lanczos"]
    print(f"  scaled / full: {ratio:.2f}")
    psnrs = []
    for src in sources:
        a = np.asarray(full(src), dtype=np.float64)
        b = np.asarray(scaled_decode(src), dtype=np.float64)
        mse = float(((a - b) ** 2).mean())
        psnrs.append(99.0 if mse == 0 else 10 * np.log10(255**2 / mse))
    print(
        f"  PSNR of the scaled route against the full route: {min(psnrs):.1f}-{max(psnrs):.1f} dB\n"
    )


# --- main ----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per image (default 3)")
    parser.add_argument("--sizes", default="0.5,2,12", help="megapixels, comma-separated")
    parser.add_argument("--photos", type=int, default=len(PHOTOS), help="how many photographs")
    parser.add_argument("--all", action="store_true", help="slow variants at every size too")
    parser.add_argument("--sweep", action="store_true", help="encoder-settings sweep at 2 MP")
    parser.add_argument("--resize", action="store_true", help="12 MP to 2000x2000: draft or not")
    parser.add_argument(
        "--blocks-max", type=int, default=None, help="Pillow block cache instead of configure()'s"
    )
    args = parser.parse_args()

    imaging.configure()
    if args.blocks_max is not None:
        Image.core.set_blocks_max(args.blocks_max)
    pyvips.cache_set_max(0)
    print(
        f"Pillow {Image.__version__} blocks_max={Image.core.get_blocks_max()} "
        f"avif_threads={AvifImagePlugin.DEFAULT_MAX_THREADS}; libvips {pyvips.version(0)}."
        f"{pyvips.version(1)} (VIPS_CONCURRENCY={os.environ['VIPS_CONCURRENCY']}); "
        f"simplejpeg {simplejpeg.__version__}; q{Q}, repeat {args.repeat}\n"
    )
    if args.sweep:
        sweep(args.repeat, args.photos)
        return
    if args.resize:
        resize_bench(args.repeat, args.photos)
        return

    started = time.perf_counter()
    rows: list[Row] = []
    for mp in (float(s) for s in args.sizes.split(",")):
        sources = build_sources(mp, args.photos)
        for section, variant, fn, slow in MAIN:
            if slow and mp > 2 and not args.all:
                continue
            src_section = "jpeg" if section == "jpeg>avif" else section
            rows.append(measure(section, variant, fn, sources[src_section], args.repeat))
    rows.sort(key=lambda r: (r.section, r.mp))
    print_rows(rows)
    print_ratios(rows)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
