"""The JPEG -> JPEG fast path's routes against the general path and a plain simplejpeg loop.

Not a test. For scikit-image's four sample photographs scaled to each size and saved as
JPEG (q90 4:2:0 as bench/throughput.py serves them, plus q75 and q90 4:4:4 inputs),
re-encoded at quality 50 by:

  general     imgbatch's Pillow path (`compress` with the fast path switched off)
  pixels      the fast path's simplejpeg route (decode RGB, encode 4:2:0)
  dct         the fast path's `_jpegdct` route (requantized coefficients), if built
  simplejpeg  a plain decode + encode (4:2:0, q50): the baseline

prints CPU ms per image (median of alternated rounds, one process), the ratio to the
simplejpeg loop measured in the same rounds, output size / input size, and the SSIM
difference to the general path *at the same output size* (the general path's
size -> SSIM curve over qualities 30-95, interpolated).

    .venv/bin/python bench/turbo.py                  # ~2 minutes
    .venv/bin/python bench/turbo.py --rounds 7 --sizes 0.5 2
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import simplejpeg
import skimage.data
from PIL import Image
from skimage.metrics import structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from imgbatch.imaging import CompressOptions, compress, configure, turbo

Q = 50
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
INPUTS = {
    "q90 4:2:0": {"quality": 90},
    "q75 4:2:0": {"quality": 75},
    "q90 4:4:4": {"quality": 90, "subsampling": 0},
}


def photographs(mp: float, params: dict[str, int]) -> list[bytes]:
    out = []
    for name in PHOTOS:
        im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        s = (mp * 1e6 / (im.width * im.height)) ** 0.5
        im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, "JPEG", **params)
        out.append(buf.getvalue())
    return out


def general(data: bytes, quality: int = Q) -> bytes:
    saved = turbo.applies
    turbo.applies = lambda *a, **k: False  # type: ignore[assignment]
    try:
        return compress(data, CompressOptions(quality=quality)).data
    finally:
        turbo.applies = saved  # type: ignore[assignment]


def pixels(data: bytes) -> bytes:
    return turbo._reencode(data, Q, grey=False)


def dct(data: bytes) -> bytes:
    luma, chroma = turbo.target_tables(Q)
    return bytes(turbo._jpegdct.requantize(data, luma, chroma))


def plain(data: bytes) -> bytes:
    return simplejpeg.encode_jpeg(simplejpeg.decode_jpeg(data), quality=Q, colorsubsampling="420")


def rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def ssim(ref: np.ndarray, data: bytes) -> float:
    return float(structural_similarity(ref, rgb(data), channel_axis=2, data_range=255))


def cpu_ms(fn: Callable[[bytes], bytes], files: list[bytes], repeat: int) -> float:
    started = time.process_time()
    for _ in range(repeat):
        for data in files:
            fn(data)
    return (time.process_time() - started) * 1000 / (repeat * len(files))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.5, 2.0, 12.0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-quality", action="store_true", help="timings only")
    args = parser.parse_args()
    configure()
    all_variants: dict[str, Callable[[bytes], bytes]] = {
        "simplejpeg": plain,
        "general": general,
        "pixels": pixels,
    }
    if turbo.dct_available():
        all_variants["dct"] = dct  # where the rule routes there (not 4:4:4)
    print(f"dct extension built: {turbo.dct_available()}; CPU ms per image, one process")
    print(
        f"{'input':>10} {'MP':>5} {'variant':>10} {'ms':>7} {'x plain':>8} {'out/in':>7} {'dSSIM@size':>11}"
    )
    for label, params in INPUTS.items():
        for mp in args.sizes:
            files = photographs(mp, params)
            routed = turbo.route(turbo.jpegfacts.parse(files[0]), turbo.dct_available())
            variants = {k: v for k, v in all_variants.items() if k != "dct" or routed == turbo.DCT}
            repeat = max(1, round(6 / mp))
            times: dict[str, list[float]] = {k: [] for k in variants}
            for r in range(args.rounds):
                for k in variants if r % 2 == 0 else reversed(list(variants)):
                    times[k].append(cpu_ms(variants[k], files, repeat))
            quality = {k: (0.0, 0.0) for k in variants}
            if not args.no_quality and mp <= 2:
                quality = same_size_ssim(files, variants)
            for k in variants:
                ratio = statistics.median(
                    a / b for a, b in zip(times[k], times["simplejpeg"], strict=True)
                )
                size = sum(len(variants[k](d)) for d in files) / sum(len(d) for d in files)
                d_ssim = f"{quality[k][1]:+11.4f}" if quality[k][0] else f"{'-':>11}"
                print(
                    f"{label:>10} {mp:5.1f} {k:>10} {statistics.median(times[k]):7.2f} {ratio:8.2f} {size:7.3f} {d_ssim}",
                    flush=True,
                )


def same_size_ssim(
    files: list[bytes], variants: dict[str, Callable[[bytes], bytes]]
) -> dict[str, tuple[float, float]]:
    """Mean SSIM of each variant and its mean difference to the general path's SSIM at the
    same size (interpolated on the general path's curve over qualities 30-95)."""
    sums = {k: [0.0, 0.0] for k in variants}
    for data in files:
        ref = rgb(data)
        curve = sorted(
            (len(out), ssim(ref, out)) for out in (general(data, q) for q in range(30, 96, 5))
        )
        for k, fn in variants.items():
            out = fn(data)
            s = ssim(ref, out)
            at = float(np.interp(len(out), [c[0] for c in curve], [c[1] for c in curve]))
            sums[k][0] += s / len(files)
            sums[k][1] += (s - at) / len(files)
    return {k: (v[0], v[1]) for k, v in sums.items()}


if __name__ == "__main__":
    main()
