"""What politeness costs: per-host slots and cool-down checks (`fetching.hosts`).

Not a test. Prints, on this machine:

- microseconds per cool-down check of a host without trouble (a failed open),
- microseconds per slot taken and given back, uncontended and with other processes
  holding every other slot of the host,
- client CPU per download with and without a HostBoard, through the real Fetcher from a
  loopback keep-alive host in another process (A/B runs alternated, median of --repeat),
- the wall time of the same downloads from several processes sharing one host's slots.

    .venv/bin/python bench/host_slots.py
    .venv/bin/python bench/host_slots.py --downloads 2000 --repeat 5
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from imgbatch.fetching import AddressPolicy, Fetcher, FetchLimits, HostBoard  # noqa: E402

ORIGIN = "http://img.example:80"


def per_call_us(action: object, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        action()  # type: ignore[operator]
    return (time.perf_counter() - started) / n * 1e6


def _hold(directory: str, count: int, ready: object, stop: object) -> None:
    board = HostBoard(Path(directory), 8)
    import contextlib

    with contextlib.ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(board.slot(ORIGIN))
        ready.set()  # type: ignore[attr-defined]
        stop.wait(120)  # type: ignore[attr-defined]


def board_figures(directory: Path, n: int) -> None:
    board = HostBoard(directory, 8)

    def take() -> None:
        with board.slot(ORIGIN):
            pass

    print(
        f"cool-down check, host without trouble:  {per_call_us(lambda: board.state(ORIGIN), n):6.1f} µs"
    )
    print(f"slot taken and given back, uncontended: {per_call_us(take, n):6.1f} µs")
    ctx = multiprocessing.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(directory), 7, ready, stop))
    holder.start()
    ready.wait(10)
    print(f"slot taken and given back, 7 of 8 held: {per_call_us(take, n):6.1f} µs")
    stop.set()
    holder.join()


def _serve(directory: str, port_out: object, stop: object) -> None:
    from support.imageserver import ImageServer

    with ImageServer(Path(directory)) as server:
        port_out.put(server.port)  # type: ignore[attr-defined]
        stop.wait(600)  # type: ignore[attr-defined]


def _photo(directory: Path) -> None:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(1080, 1920, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    (directory / "photo.jpg").write_bytes(buf.getvalue())


def client_cpu_ms(fetcher: Fetcher, url: str, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        fetcher.fetch(url)
    return (time.process_time() - started) / n * 1000


def _download(url: str, board_dir: str | None, per_host: int, n: int, out: object) -> None:
    board = HostBoard(Path(board_dir), per_host) if board_dir else None
    with Fetcher(AddressPolicy(allow_private=True), FetchLimits(), hosts=board) as fetcher:
        for _ in range(n):
            fetcher.fetch(url)
    out.put(True)  # type: ignore[attr-defined]


def wall_seconds(url: str, board_dir: str | None, per_host: int, procs: int, n: int) -> float:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [
        ctx.Process(target=_download, args=(url, board_dir, per_host, n, out)) for _ in range(procs)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for _ in workers:
        out.get(timeout=300)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        board_figures(root / "board-a", 20_000)
        images = root / "images"
        images.mkdir()
        _photo(images)
        ctx = multiprocessing.get_context("fork")
        port_out, stop = ctx.Queue(), ctx.Event()
        server = ctx.Process(target=_serve, args=(str(images), port_out, stop))
        server.start()
        url = f"http://127.0.0.1:{port_out.get(timeout=10)}/photo.jpg"
        try:
            plain = Fetcher(AddressPolicy(allow_private=True), FetchLimits())
            polite = Fetcher(
                AddressPolicy(allow_private=True),
                FetchLimits(),
                hosts=HostBoard(root / "board-b", 8),
            )
            size = len(plain.fetch(url).data)
            client_cpu_ms(polite, url, 50)  # warm-up
            without, with_board = [], []
            for _ in range(args.repeat):
                without.append(client_cpu_ms(plain, url, args.downloads))
                with_board.append(client_cpu_ms(polite, url, args.downloads))
            a, b = statistics.median(without), statistics.median(with_board)
            diffs = [w - o for o, w in zip(without, with_board, strict=True)]
            print("  runs without:", " ".join(f"{x:.3f}" for x in without))
            print("  runs with:   ", " ".join(f"{x:.3f}" for x in with_board))
            print(f"  paired differences, median: {statistics.median(diffs) * 1000:+.1f} µs")
            print(
                f"client CPU per download of {size / 1e6:.1f} MB: {a:.3f} ms without a board, "
                f"{b:.3f} ms with ({(b - a) * 1000:+.1f} µs, {args.repeat} runs of "
                f"{args.downloads}, median)"
            )
            n = max(args.downloads // 4, 50)
            for per_host in (8, 2):
                free = wall_seconds(url, None, 0, 4, n)
                limited = wall_seconds(url, str(root / "board-c"), per_host, 4, n)
                print(
                    f"4 processes x {n} downloads: {free:.2f} s without a limit, "
                    f"{limited:.2f} s with {per_host} per host"
                )
        finally:
            stop.set()
            server.join(10)


if __name__ == "__main__":
    main()
