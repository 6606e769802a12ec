"""Does `quality=auto` pay for itself? A benchmark on 24 varied images (bench/photo_corpus.py).

Not a test. Each corpus image is saved as a JPEG at quality 95 (a camera-like input) and
compressed by `imgbatch.imaging.compress` (JPEG out; --format for WebP/AVIF):

1. target: with quality=auto, every output is scored again here, independently of the
   search (`Scorer(decoded input).score_image(output)`), and must meet the target;
2. bytes: every fixed quality 30-95 is tried too; the fixed quality that gives the same
   worst-case score over the corpus as auto (the lowest whose worst score reaches auto's
   worst score) is the fair rival, and auto must need fewer bytes in total;
3. CPU: every image scaled to 2 MP; CPU ms per image of auto vs the fixed-quality path
   (quality 50, the default), median of --repeat runs, one process. The fixed JPEG path
   is measured as shipped (libjpeg-turbo fast path, which auto JPEG -> JPEG now takes
   too: `imaging.autojpeg`) and, for reference, as Pillow's general path (decode, orient,
   encode), which WebP/AVIF and resized outputs take;
4. --targets: the qualities and bytes each target gives (how the default was chosen), and
   --crops DIR writes 100 % / 200 % crops at several targets for looking at.

    .venv/bin/python bench/auto_quality.py                 # ~2 minutes
    .venv/bin/python bench/auto_quality.py --format webp --repeat 3
    .venv/bin/python bench/auto_quality.py --targets 0.95,0.96,0.97,0.98 --crops /tmp/crops
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import photo_corpus

from imgbatch import imaging
from imgbatch.imaging import CompressOptions, compress, turbo
from imgbatch.imaging.autoquality import HIGH, LOW, Scorer

FIXED = range(LOW, HIGH + 1)
DEFAULT_FIXED = 50


@dataclass
class Item:
    name: str
    kind: str
    source: bytes  # the input file: JPEG q95
    scorer: Scorer  # the decoded input, scored against
    auto_quality: int = 0
    auto_bytes: int = 0
    auto_score: float = 0.0
    fixed: dict[int, tuple[int, float]] = field(default_factory=dict)  # quality: bytes, score


def jpeg(im: Image.Image, quality: int = 95) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def run_corpus(fmt: str, target: float) -> list[Item]:
    items = []
    for name, kind, im in photo_corpus.build():
        source = jpeg(im)
        item = Item(name, kind, source, Scorer(decoded(source)))
        auto = compress(source, CompressOptions(quality="auto", format=fmt, auto_target=target))
        item.auto_quality = auto.quality or 0
        item.auto_bytes = auto.bytes_out
        item.auto_score = item.scorer.score_image(auto.data)
        for q in FIXED:
            out = compress(source, CompressOptions(quality=q, format=fmt))
            item.fixed[q] = (out.bytes_out, item.scorer.score_image(out.data))
        items.append(item)
    return items


def report_corpus(items: list[Item], fmt: str, target: float) -> None:
    print(f"1-2. {len(items)} images, JPEG q95 in, {fmt} out, target {target}")
    print(
        f"  {'image':15} {'kind':17} {'MP':>5} {'auto q':>6} {'score':>7} {'bytes':>9} "
        f"{'q50 score':>9} {'q50 bytes':>9}"
    )
    for it in items:
        mp = it.scorer.sample.width * it.scorer.sample.height / 1e6
        b50, s50 = it.fixed[DEFAULT_FIXED]
        flag = "" if it.auto_score >= target else "  MISSES"
        print(
            f"  {it.name:15} {it.kind:17} {mp:5.2f} {it.auto_quality:6d} {it.auto_score:7.4f} "
            f"{it.auto_bytes:9d} {s50:9.4f} {b50:9d}{flag}"
        )
    worst_auto = min(it.auto_score for it in items)
    met = sum(it.auto_score >= target for it in items)
    print(
        f"  every image meets the target: {met == len(items)} ({met}/{len(items)}); "
        f"worst auto score {worst_auto:.4f}"
    )
    rival = next((q for q in FIXED if min(it.fixed[q][1] for it in items) >= worst_auto), None)
    total_in = sum(len(it.source) for it in items)
    total_auto = sum(it.auto_bytes for it in items)
    print(f"  input {total_in:,} B; auto {total_auto:,} B ({total_auto / total_in:.3f} of input)")
    if rival is None:
        print(
            f"  no fixed quality up to {HIGH} reaches a worst score of {worst_auto:.4f}: "
            f"fixed {HIGH} as the rival"
        )
        rival = HIGH
    total_rival = sum(it.fixed[rival][0] for it in items)
    print(
        f"  fixed quality with the same worst-case score: {rival}: {total_rival:,} B; "
        f"auto / fixed = {total_auto / total_rival:.3f} (auto smaller: {total_auto < total_rival})"
    )
    total_50 = sum(it.fixed[DEFAULT_FIXED][0] for it in items)
    below = sum(it.fixed[DEFAULT_FIXED][1] < target for it in items)
    print(
        f"  for reference, fixed {DEFAULT_FIXED} (the default): {total_50:,} B, "
        f"auto / fixed {DEFAULT_FIXED} = {total_auto / total_50:.3f}; "
        f"{below} images below the target at {DEFAULT_FIXED}"
    )


def cpu_ms(fn: object, data: bytes, repeat: int) -> float:
    call = fn  # type: ignore[assignment]
    call(data)  # type: ignore[operator]  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        call(data)  # type: ignore[operator]
        times.append((time.process_time() - t0) * 1000)
    return statistics.median(times)


def report_cpu(fmt: str, target: float, repeat: int) -> None:
    auto = CompressOptions(quality="auto", format=fmt, auto_target=target)
    fixed = CompressOptions(quality=DEFAULT_FIXED, format=fmt)
    shipped_applies = turbo.applies
    rows = []
    for name, _kind, im in photo_corpus.build():
        source = jpeg(photo_corpus.scaled(im, 2.0))
        a = cpu_ms(lambda d: compress(d, auto), source, repeat)
        f = cpu_ms(lambda d: compress(d, fixed), source, repeat)
        turbo.applies = lambda *args, **kwargs: False  # type: ignore[assignment]
        try:
            p = cpu_ms(lambda d: compress(d, fixed), source, repeat)
        finally:
            turbo.applies = shipped_applies  # type: ignore[assignment]
        rows.append((name, a, f, p))
    print(
        f"\n3. CPU ms per image at 2 MP (JPEG q95 in, {fmt} out), median of {repeat}, one process"
    )
    print(
        f"  {'image':15} {'auto':>8} {'fixed 50':>9} {'(Pillow)':>9} {'auto/fixed':>10} "
        f"{'auto/Pillow':>11}"
    )
    for name, a, f, p in rows:
        print(f"  {name:15} {a:8.1f} {f:9.1f} {p:9.1f} {a / f:10.2f} {a / p:11.2f}")
    a = statistics.median(r[1] for r in rows)
    f = statistics.median(r[2] for r in rows)
    p = statistics.median(r[3] for r in rows)
    print(
        f"  median per image: auto {a:.1f} ms, fixed {f:.1f} ms (Pillow path {p:.1f} ms): "
        f"auto/fixed {a / f:.2f}x, auto/Pillow fixed {a / p:.2f}x"
    )


def report_targets(targets: list[float], fmt: str) -> None:
    print(f"\n4. what each target gives ({fmt} out): qualities chosen and total bytes")
    corpus = [(n, jpeg(im)) for n, _k, im in photo_corpus.build()]
    total_in = sum(len(d) for _, d in corpus)
    for target in targets:
        options = CompressOptions(quality="auto", format=fmt, auto_target=target)
        results = [compress(d, options) for _, d in corpus]
        qs = sorted(r.quality or 0 for r in results)
        out = sum(r.bytes_out for r in results)
        print(
            f"  target {target:.3f}: qualities min {qs[0]} median {qs[len(qs) // 2]} max "
            f"{qs[-1]}; {out:,} B = {out / total_in:.3f} of input"
        )


CROPS = {  # (left, top) of a 200x120 crop where artifacts show first
    "mug-on-white": (560, 480),
    "camera": (600, 400),
    "text-sheet": (60, 100),
    "flat-banner": (280, 250),
    "motorcycle": (800, 500),
}


def write_crops(directory: Path, targets: list[float]) -> None:
    """One sheet per image: the input and each target's output, 200x120 crops at 200 %."""
    directory.mkdir(parents=True, exist_ok=True)
    images = {n: im for n, _k, im in photo_corpus.build() if n in CROPS}
    for name, (x, y) in CROPS.items():
        source = jpeg(images[name])
        tiles = [("input q95", decoded(source))]
        for target in targets:
            out = compress(source, CompressOptions(quality="auto", auto_target=target))
            tiles.append((f"{target} -> q{out.quality}", decoded(out.data)))
        sheet = Image.new("RGB", (400 * len(tiles), 254), "white")
        draw = ImageDraw.Draw(sheet)
        for i, (label, im) in enumerate(tiles):
            crop = im.crop((x, y, x + 200, y + 120)).resize((400, 240), Image.Resampling.NEAREST)
            sheet.paste(crop, (i * 400, 14))
            draw.text((i * 400 + 4, 1), label, fill="black")
        sheet.save(directory / f"{name}.png")
    print(f"\ncrops written to {directory}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=imaging.DEFAULT_AUTO_TARGET)
    parser.add_argument("--format", default="keep", help="keep (JPEG), webp or avif")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per image (CPU)")
    parser.add_argument("--targets", default="0.95,0.96,0.97,0.98,0.99")
    parser.add_argument("--crops", type=Path, help="write 200 %% crops per target here")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    imaging.configure()
    started = time.perf_counter()
    print(f"Pillow {Image.__version__}; target {args.target}; searched qualities {LOW}-{HIGH}\n")
    report_corpus(run_corpus(args.format, args.target), args.format, args.target)
    if not args.skip_cpu:
        report_cpu(args.format, args.target, args.repeat)
    targets = [float(t) for t in args.targets.split(",")]
    report_targets(targets, args.format)
    if args.crops:
        write_crops(args.crops, targets)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
