"""End-to-end throughput against a plain compression loop, in one run.

Serves N real photographs (scikit-image's sample photos, scaled) from a local
HTTP/1.1 keep-alive server, submits them to a real imgbatch deployment (API +
worker processes, embedded defaults unless --database/--queue/--storage say
otherwise), and prints images/second end to end beside the same images
compressed by `imaging.compress` in a plain multiprocessing loop on all cores,
and the ratio of the two. Target: ratio >= 0.85.

    .venv/bin/python bench/throughput.py --images 200 --megapixels 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from imagehost import ImageHost, image_host  # noqa: E402
from PIL import Image  # noqa: E402

from imgbatch.imaging import CompressOptions, compress, configure  # noqa: E402
from support.service import Service  # noqa: E402


def photographs(megapixels: float, count: int, directory: Path) -> list[Path]:
    """`count` JPEG files (quality 90) made from scikit-image's real photographs."""
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    paths = []
    for i in range(count):
        img = Image.fromarray(sources[i % len(sources)]).convert("RGB")
        scale = (megapixels * 1e6 / (img.width * img.height)) ** 0.5
        img = img.resize(
            (round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS
        )
        if i >= len(sources):  # different bytes per file, same content class
            img = img.rotate(0.5 * (i // len(sources)), resample=Image.Resampling.BILINEAR)
        path = directory / f"photo{i}.jpg"
        img.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def _compress_file(path: str) -> int:
    return compress(Path(path).read_bytes(), CompressOptions()).bytes_out


def _init() -> None:
    configure()


def plain_loop(paths: list[Path], processes: int) -> float:
    """Images/second for compress() over the files with a process pool on all cores."""
    with multiprocessing.get_context("fork").Pool(processes, initializer=_init) as pool:
        pool.map(_compress_file, [str(p) for p in paths[: processes * 2]])  # warm up
        started = time.perf_counter()
        pool.map(_compress_file, [str(p) for p in paths], chunksize=1)
        return len(paths) / (time.perf_counter() - started)


def end_to_end(
    paths: list[Path],
    server: ImageHost,
    workdir: Path,
    env: dict[str, str],
    processes: int,
    workers: int,
) -> float:
    rows = ["S. No.,Product Name,Input Image Urls"]
    rows += [f'{i + 1},Product {i + 1},"{server.url("/" + p.name)}"' for i, p in enumerate(paths)]
    body = ("\n".join(rows) + "\n").encode()
    with Service(workdir / "data", env=env) as service:
        service.start(workers=workers, concurrency=processes)
        warm = (
            "S. No.,Product Name,Input Image Urls\n"
            + "\n".join(
                f'{i + 1},W,"{server.url("/" + p.name)}"'
                for i, p in enumerate(paths[: processes * 2 * workers])
            )
            + "\n"
        ).encode()
        status, answer = service.upload(warm)
        assert status == 202, answer
        service.wait_final(answer["request_id"], timeout=600)
        # From just before the upload to the moment the ledger finalized the request (its
        # completed_at), so the status polling interval does not blur the figure.
        started = datetime.now(UTC)
        status, answer = service.upload(body)
        assert status == 202, answer
        doc = service.wait_final(answer["request_id"], timeout=3600)
        elapsed = (datetime.fromisoformat(doc["completed_at"]) - started).total_seconds()
        assert doc["progress"]["succeeded"] == len(paths), doc["progress"]
    return len(paths) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--megapixels", type=float, nargs="+", default=[2.0])
    parser.add_argument(
        "--processes",
        type=int,
        default=(os.cpu_count() or 1) + 1,
        help="processes for both: imgbatch's default (cores + 1) and the plain loop's pool",
    )
    parser.add_argument("--workers", type=int, default=1, help="separate `imgbatch worker` nodes")
    parser.add_argument("--database", help="IMGBATCH_DATABASE_URL (default: embedded SQLite)")
    parser.add_argument("--queue", help="IMGBATCH_QUEUE_URL (default: embedded SQLite)")
    parser.add_argument("--storage", help="IMGBATCH_STORAGE_URL (default: local files)")
    args = parser.parse_args()
    env = {
        k: v
        for k, v in {
            "IMGBATCH_DATABASE_URL": args.database,
            "IMGBATCH_QUEUE_URL": args.queue,
            "IMGBATCH_STORAGE_URL": args.storage,
            "IMGBATCH_LOG_LEVEL": "WARNING",
        }.items()
        if v
    }
    print(f"cores: {os.cpu_count()}, worker processes: {args.processes} x {args.workers} node(s)")
    print(f"{'MP':>5} {'images':>7} {'plain loop img/s':>17} {'end-to-end img/s':>17} {'ratio':>6}")
    for mp in args.megapixels:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            (workdir / "img").mkdir()
            paths = photographs(mp, args.images, workdir / "img")
            base = plain_loop(paths, args.processes)
            with image_host(workdir / "img") as server:
                e2e = end_to_end(paths, server, workdir, env, args.processes, args.workers)
            print(
                f"{mp:5.1f} {len(paths):7d} {base:17.1f} {e2e:17.1f} {e2e / base:6.2f}", flush=True
            )


if __name__ == "__main__":
    main()
