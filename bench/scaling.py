"""Scale-out figure: end-to-end throughput with 1 and with 2 worker processes, side by side.

Runs the real scale-out shape on loopback: PostgreSQL ledger, Redis (or
PostgreSQL) queue, S3 storage on a moto server, one `imgbatch serve --workers 0`
API process and N `imgbatch worker --concurrency C` processes. Each run gets a
fresh database, queue and bucket; the images are real photographs (see
throughput.py) served by a local HTTP server. Prints images/second for each
worker count and the ratio to one worker.

    .venv/bin/python bench/scaling.py --images 120 --megapixels 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from imagehost import image_host  # noqa: E402
from throughput import end_to_end, photographs  # noqa: E402

from support.backends import scaleout_env  # noqa: E402
from support.s3server import SCRUBBED_AWS_VARS, start_s3_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--megapixels", type=float, default=1.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="image jobs per worker process")
    parser.add_argument("--queue", choices=["redis", "postgresql"], default="redis")
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count (best kept)")
    args = parser.parse_args()
    for name in SCRUBBED_AWS_VARS:  # dummy credentials only: never real AWS
        os.environ.pop(name, None)

    print(
        f"cores: {os.cpu_count()}; PostgreSQL + {args.queue} queue + S3 (moto); "
        f"{args.images} images of {args.megapixels} MP; --concurrency {args.concurrency}"
    )
    s3 = start_s3_server()
    results: dict[int, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            (workdir / "img").mkdir()
            paths = photographs(args.megapixels, args.images, workdir / "img")
            with image_host(workdir / "img") as server:
                for workers in args.workers:
                    best = 0.0
                    for run in range(args.repeat):
                        with scaleout_env(s3, queue=args.queue) as env:
                            env = {**env, "IMGBATCH_LOG_LEVEL": "WARNING"}
                            rundir = workdir / f"w{workers}-{run}"
                            started = time.perf_counter()
                            rate = end_to_end(
                                paths, server, rundir, env, args.concurrency, workers
                            ).rate
                            wall = time.perf_counter() - started
                        best = max(best, rate)
                        print(
                            f"  {workers} worker(s), run {run + 1}: {rate:6.1f} img/s "
                            f"({wall:.0f}s with start-up)",
                            flush=True,
                        )
                    results[workers] = best
    finally:
        s3.stop()

    base = results[args.workers[0]]
    print()
    print(f"{'worker processes':>16} {'images/s':>9} {'ratio':>6}")
    for workers, rate in results.items():
        print(f"{workers:>16} {rate:9.1f} {rate / base:6.2f}")


if __name__ == "__main__":
    main()
