"""End-to-end throughput against plain compression loops, in one run.

Serves N real photographs (scikit-image's sample photos, scaled) from nginx on a loopback
port (`--host uvicorn` for the in-process alternative), submits them to a real imgbatch
deployment (API + worker processes, embedded defaults unless --database/--queue/--storage
say otherwise), and prints, beside plain loops on all cores over the same bytes:

  simplejpeg/s  a plain simplejpeg loop: decode + encode, 4:2:0, quality 50 (JPEG only)
  compress/s    a plain loop of `imaging.compress` (the path of that row)
  e2e/s         end to end, upload sent -> request completed; e2e/sj and e2e/cmp: ratios
  svc ms        CPU per image of the API and worker processes (from /proc)
  cmp ms        CPU per image inside compress() (the plain loop); fixed ms = svc - cmp
  host ms       CPU per image of the image host
  cpu/sj        simplejpeg CPU per image / (svc + host): the ratio the rates would show on
                CPUs nobody else uses, less noisy than e2e/sj on a shared machine

With --ab each round also runs end to end with IMGBATCH_JPEG_FAST_PATH=false ("pillow"),
in alternating order. Target: end to end >= 0.85x the simplejpeg loop at 0.5 and 2 MP.

    .venv/bin/python bench/throughput.py --megapixels 0.5 2 --images 3000 600 --ab --repeat 3
    .venv/bin/python bench/throughput.py --images 200 --megapixels 12 --ab
    .venv/bin/python bench/throughput.py --format png --megapixels 2 --images 300
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from imagehost import HOSTS, ImageHost  # noqa: E402
from PIL import Image  # noqa: E402

from imgbatch.config import Settings  # noqa: E402
from imgbatch.fetching import AddressPolicy, Fetcher, FetchLimits  # noqa: E402
from imgbatch.imaging import CompressOptions, compress, configure  # noqa: E402
from support.service import Service  # noqa: E402


def photographs(megapixels: float, count: int, directory: Path, fmt: str = "jpeg") -> list[Path]:
    """`count` files (JPEG q90, WebP q90 or PNG) made from scikit-image's real photographs."""
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
        path = directory / f"photo{i}.{ {'jpeg': 'jpg'}.get(fmt, fmt) }"
        img.save(path, fmt.upper(), **({} if fmt == "png" else {"quality": 90}))
        paths.append(path)
    return paths


def _compress_file(path: str) -> float:
    """Compress one file; returns the CPU seconds compress() itself took."""
    data = Path(path).read_bytes()
    started = time.process_time()
    compress(data, CompressOptions())
    return time.process_time() - started


def _compress_file_general(path: str) -> float:
    """The same with the JPEG fast path off: Pillow for every image."""
    data = Path(path).read_bytes()
    started = time.process_time()
    compress(data, CompressOptions(jpeg_fast_path=False))
    return time.process_time() - started


def _simplejpeg_file(path: str) -> float:
    import simplejpeg

    data = Path(path).read_bytes()
    started = time.process_time()
    simplejpeg.encode_jpeg(simplejpeg.decode_jpeg(data), quality=50, colorsubsampling="420")
    return time.process_time() - started


def _init() -> None:
    configure()


@dataclass(frozen=True)
class Loop:
    rate: float  # images/second
    cpu_ms: float  # CPU per image inside the measured call (decode + encode)
    processes: int


def plain_loop(paths: list[Path], processes: int, work: Any = _compress_file) -> Loop:
    """Images/second for `work` (compress() or simplejpeg) over the files, a process per
    core (or `processes`), and the CPU per image spent inside it."""
    with multiprocessing.get_context("fork").Pool(processes, initializer=_init) as pool:
        pool.map(work, [str(p) for p in paths[: processes * 2]])  # warm up
        started = time.perf_counter()
        cpu = pool.map(work, [str(p) for p in paths], chunksize=1)
        rate = len(paths) / (time.perf_counter() - started)
    return Loop(rate, 1000 * sum(cpu) / len(paths), processes)


def best_loop(paths: list[Path], counts: list[int], work: Any = _compress_file) -> Loop:
    return max((plain_loop(paths, n, work) for n in counts), key=lambda loop: loop.rate)


def mean_loop(a: Loop, b: Loop) -> Loop:
    """Before and after the end-to-end run: this box's speed drifts between minutes."""
    return Loop((a.rate + b.rate) / 2, (a.cpu_ms + b.cpu_ms) / 2, a.processes)


def group_cpu_seconds(groups: set[int]) -> float:
    """User + system CPU of every live process in these process groups (the service)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended
            continue
        if int(fields[2]) in groups:  # pgrp
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


_fetcher: Any = None


def _init_fetching() -> None:
    global _fetcher
    configure()
    _fetcher = Fetcher(AddressPolicy(allow_private=True), FetchLimits())


def _fetch_and_compress(url: str) -> int:
    return compress(_fetcher.fetch(url).data, CompressOptions()).bytes_out


def fetch_loop(urls: list[str], processes: int) -> float:
    """Images/second for imgbatch's HTTP client + compress() in a plain process pool: the
    ceiling any service that downloads each image from this host can reach here."""
    with multiprocessing.get_context("fork").Pool(processes, initializer=_init_fetching) as pool:
        pool.map(_fetch_and_compress, urls[: processes * 2])  # warm up
        started = time.perf_counter()
        pool.map(_fetch_and_compress, urls, chunksize=1)
        return len(urls) / (time.perf_counter() - started)


@dataclass(frozen=True)
class Timeline:
    """Where the end-to-end seconds went, read back from the ledger."""

    images: int
    total: float  # upload sent -> request completed_at
    accept: float  # upload sent -> 202 received (validation, ledger rows, enqueue)
    wake: float  # 202 received -> first image claimed (a worker noticing the jobs)
    steady: float  # first image claimed -> last image finished
    host_cpu: float = 0.0  # CPU seconds the image host spent serving the images
    service_cpu: float = 0.0  # CPU seconds of the API and worker processes

    @property
    def rate(self) -> float:
        return self.images / self.total

    @property
    def steady_rate(self) -> float:
        return self.images / self.steady


def timeline(
    database_url: str, request_id: str, started: datetime, accepted: datetime, images: int
) -> Timeline:
    """Split a finished request's wall time using the ledger's own timestamps."""
    from support.databases import query

    ((first, last),) = query(
        database_url,
        "SELECT min(started_at), max(finished_at) FROM images WHERE request_id = :r",
        r=request_id,
    )
    ((completed,),) = query(
        database_url, "SELECT completed_at FROM requests WHERE id = :r", r=request_id
    )
    first, last, completed = (_utc(v) for v in (first, last, completed))
    return Timeline(
        images=images,
        total=(completed - started).total_seconds(),
        accept=(accepted - started).total_seconds(),
        wake=(first - accepted).total_seconds(),
        steady=(last - first).total_seconds(),
    )


def _utc(value: datetime | str) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def wait_final(service: Service, request_id: str) -> dict[str, Any]:
    """Poll as a client would: progress only (one product), once a second. The figure
    comes from the ledger's completed_at, so the polling interval does not blur it."""
    return service.wait_final(request_id, timeout=3600, interval=1.0, query="limit=1")


def end_to_end(
    paths: list[Path],
    server: ImageHost,
    workdir: Path,
    env: dict[str, str],
    processes: int,
    workers: int,
) -> Timeline:
    rows = ["S. No.,Product Name,Input Image Urls"]
    rows += [f'{i + 1},Product {i + 1},"{server.url("/" + p.name)}"' for i, p in enumerate(paths)]
    body = ("\n".join(rows) + "\n").encode()
    with Service(workdir / "data", env=env) as service:
        service.start(workers=workers, concurrency=processes)
        # A warm-up request of the same size first: a service's first large upload pays
        # one-time costs (the database file and WAL growing, ~60 ms for 1,000 rows) that
        # are not throughput, and the worker processes must be started and imported.
        status, answer = service.upload(body)
        assert status == 202, answer
        wait_final(service, answer["request_id"])
        # From just before the upload to the moment the ledger finalized the request (its
        # completed_at), so the status polling interval does not blur the figure.
        started = datetime.now(UTC)
        host_cpu = server.cpu_seconds()
        groups = {p.pid for p in [service.api, *service.workers] if p is not None}
        service_cpu = group_cpu_seconds(groups)
        status, answer = service.upload(body)
        accepted = datetime.now(UTC)
        assert status == 202, answer
        doc = wait_final(service, answer["request_id"])
        assert doc["progress"]["succeeded"] == len(paths), doc["progress"]
        database_url = Settings(
            data_dir=workdir / "data", database_url=env.get("IMGBATCH_DATABASE_URL")
        ).resolved_database_url
        service_cpu = group_cpu_seconds(groups) - service_cpu
        split = timeline(database_url, answer["request_id"], started, accepted, len(paths))
        return replace(split, host_cpu=server.cpu_seconds() - host_cpu, service_cpu=service_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, nargs="+", default=[1000], help="per size, or one for all sizes"
    )
    parser.add_argument("--megapixels", type=float, nargs="+", default=[2.0])
    parser.add_argument("--format", choices=["jpeg", "png", "webp"], default="jpeg")
    parser.add_argument("--host", choices=sorted(HOSTS), default="nginx", help="the image host")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per size (median printed)")
    parser.add_argument(
        "--fetch-loop", action="store_true", help="also time fetch + compress in a plain pool"
    )
    parser.add_argument(
        "--ab",
        action="store_true",
        help="JPEG: also run end to end with IMGBATCH_JPEG_FAST_PATH=false, alternated",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=(os.cpu_count() or 1) + 1,
        help="imgbatch's worker processes (default cores + 1, as imgbatch's own default);"
        " the plain loops run with this many and with one per core, and the faster of the"
        " two is the baseline",
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
            # Production intervals, not the test harness's fast ones.
            "IMGBATCH_SWEEP_INTERVAL": "15",
            "IMGBATCH_LEASE_SECONDS": "120",
            "IMGBATCH_STALE_PENDING_SECONDS": "120",
            "IMGBATCH_WEBHOOK_POLL_INTERVAL": "1",
        }.items()
        if v
    }
    from imgbatch.imaging import turbo

    print(
        f"cores: {os.cpu_count()}, worker processes: {args.processes} x {args.workers} node(s),"
        f" image host: {args.host}, format: {args.format},"
        f" JPEG fast path: {'dct' if turbo.dct_available() else 'pixels'}"
    )
    print(
        f"{'MP':>5} {'path':>6} {'images':>6} {'simplejpeg/s':>12} {'compress/s':>10} {'e2e/s':>7}"
        f" {'e2e/sj':>6} {'e2e/cmp':>7} {'svc ms':>6} {'cmp ms':>6} {'fixed ms':>8}"
        f" {'host ms':>7} {'cpu/sj':>6} {'ramp s':>6}"
        + (f" {'fetch+cmp/s':>11}" if args.fetch_loop else "")
    )
    counts = args.images * len(args.megapixels) if len(args.images) == 1 else args.images
    if len(counts) != len(args.megapixels):
        parser.error("--images takes one count, or one per --megapixels value")
    for mp, images in zip(args.megapixels, counts, strict=True):
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            (workdir / "img").mkdir()
            paths = photographs(mp, images, workdir / "img", args.format)
            rows = [
                measure_once(mp, paths, workdir / f"run{run}", env, args)
                for run in range(args.repeat)
            ]
        if args.repeat > 1:
            columns = list(zip(*rows, strict=True))
            print(
                f"{mp:5.1f} MP, median of {args.repeat}: e2e/simplejpeg"
                f" {statistics.median(columns[0]):.2f} {list(columns[0])}, CPU ratio"
                f" {statistics.median(columns[1]):.2f} {list(columns[1])}, fixed cost"
                f" {statistics.median(columns[2]):.2f} ms/image",
                flush=True,
            )


def measure_once(
    mp: float, paths: list[Path], workdir: Path, env: dict[str, str], args: argparse.Namespace
) -> tuple[float, float, float]:
    """One round: plain loops, end to end (fast path on, and off with --ab, in alternating
    order per round), plain loops again; prints a row per path and returns the fast path's
    rate and CPU ratios to the simplejpeg loop and its fixed cost (ms) per image."""
    # The plain loops run before and after the end-to-end runs and the mean is the
    # baseline: this box's speed drifts by several percent between minutes. Each runs
    # with one process per core and with imgbatch's process count, and the faster of
    # the two is the baseline, so a ratio never profits from a slow baseline.
    counts = sorted({os.cpu_count() or 1, args.processes})
    jpeg = args.format == "jpeg"
    paths_off = {"fast": _compress_file, "pillow": _compress_file_general}
    variants = ["fast", "pillow"] if jpeg and args.ab else ["fast"]
    if measure_once.rounds % 2:  # type: ignore[attr-defined]
        variants.reverse()
    measure_once.rounds += 1  # type: ignore[attr-defined]
    sj_before = best_loop(paths, counts, _simplejpeg_file) if jpeg else None
    before = {v: best_loop(paths, counts, paths_off[v]) for v in variants}
    runs: dict[str, tuple[Timeline, float]] = {}
    with HOSTS[args.host](paths[0].parent) as server:
        for v in variants:
            run_env = env if v == "fast" else {**env, "IMGBATCH_JPEG_FAST_PATH": "false"}
            runs[v] = (
                end_to_end(paths, server, workdir / v, run_env, args.processes, args.workers),
                0.0,
            )
        if args.fetch_loop:
            fetching = fetch_loop([server.url("/" + p.name) for p in paths], args.processes)
            runs["fast"] = (runs["fast"][0], fetching)
    sj = (
        mean_loop(sj_before, plain_loop(paths, sj_before.processes, _simplejpeg_file))
        if sj_before
        else None
    )
    result = (0.0, 0.0, 0.0)
    for v in sorted(variants):
        cmp = mean_loop(before[v], plain_loop(paths, before[v].processes, paths_off[v]))
        t, fetching = runs[v]
        service_ms = 1000 * t.service_cpu / t.images
        fixed_ms = service_ms - cmp.cpu_ms
        sj_text = f"{sj.rate:7.1f} ({sj.processes}p)" if sj else f"{'-':>12}"
        sj_ratio = t.rate / sj.rate if sj else 0.0
        host_ms = 1000 * t.host_cpu / t.images
        # CPU per image of a plain simplejpeg loop over that of service + host: the ratio
        # the rates would have on CPUs nobody else uses (less noisy than wall rates here).
        cpu_ratio = sj.cpu_ms / (service_ms + host_ms) if sj else 0.0
        print(
            f"{mp:5.1f} {v:>6} {len(paths):6d} {sj_text:>12} {cmp.rate:10.1f} {t.rate:7.1f}"
            f" {sj_ratio:6.2f} {t.rate / cmp.rate:7.2f} {service_ms:6.2f} {cmp.cpu_ms:6.2f}"
            f" {fixed_ms:8.2f} {host_ms:7.2f} {cpu_ratio:6.2f} {t.accept + t.wake:6.3f}"
            + (f" {fetching:11.1f}" if args.fetch_loop else ""),
            flush=True,
        )
        if v == "fast":
            result = (round(sj_ratio, 2), round(cpu_ratio, 2), round(fixed_ms, 2))
    return result


measure_once.rounds = 0  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
