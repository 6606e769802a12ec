"""Client CPU per downloaded image: our Fetcher against the HTTP clients it could have used.

Not a test. Serves N photo-like JPEGs (~2 MP by default) from `ImageServer` (a
threaded HTTP/1.1 keep-alive server, listen backlog 1024) running in *another
process*, downloads them with each client, and prints per client and
concurrency: wall time, images/s and client CPU ms per image
(`time.process_time()` of this process, all its threads, median of --repeat
runs after a warm-up). Server CPU is not counted.

    .venv/bin/python bench/fetch_clients.py
    .venv/bin/python bench/fetch_clients.py --images 300 --concurrency 1 4 --repeat 5

Clients: imgbatch Fetcher (urllib3, IP pinned, address checks, watchdog),
urllib3 PoolManager, httpx.Client, aiohttp (one event loop; concurrency via
tasks). Sync clients get concurrency from a thread pool, as Huey thread workers would.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

Download = Callable[[list[str], int], int]  # (urls, concurrency) -> bytes received


def make_images(directory: Path, count: int, megapixels: float) -> list[Path]:
    """Photo-like JPEGs (smooth gradients plus noise, q85) so sizes resemble camera output."""
    import numpy as np
    from PIL import Image

    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width]
    paths = []
    for index in range(count):
        base = np.stack(
            [
                128 + 100 * np.sin(x / (90 + index) + y / 150),
                128 + 100 * np.cos(y / (110 + index) - x / 210),
                128 + 80 * np.sin((x + y) / (160 + index)),
            ],
            axis=-1,
        )
        pixels = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype("uint8")
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=85)
        path = directory / f"img{index}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def serve(directory: str, ports: Queue[int], stop: Event, stock: bool) -> None:
    if stock:  # to show what stock http.server (HTTP/1.0, backlog 5) does to the figures
        import functools
        import threading
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

        handler = functools.partial(Quiet, directory=directory)
        with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            ports.put(httpd.server_address[1])
            stop.wait()
            httpd.shutdown()
        return
    from support.imageserver import ImageServer

    with ImageServer(Path(directory)) as server:
        ports.put(server.port)
        stop.wait()


# --- clients ---------------------------------------------------------------------------


def run_threads(fetch_one: Callable[[str], int], urls: list[str], concurrency: int) -> int:
    if concurrency == 1:
        return sum(fetch_one(url) for url in urls)
    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(fetch_one, urls))


def imgbatch_fetcher() -> tuple[Download, Callable[[], None]]:
    from imgbatch.fetching import AddressPolicy, Fetcher, FetchLimits

    fetcher = Fetcher(AddressPolicy(allow_private=True), FetchLimits(max_bytes=100 << 20))
    return (
        lambda urls, c: run_threads(lambda u: len(fetcher.fetch(u).data), urls, c),
        fetcher.close,
    )


def urllib3_poolmanager() -> tuple[Download, Callable[[], None]]:
    import urllib3

    manager = urllib3.PoolManager(maxsize=16)
    return (
        lambda urls, c: run_threads(lambda u: len(manager.request("GET", u).data), urls, c),
        manager.clear,
    )


def httpx_client() -> tuple[Download, Callable[[], None]]:
    import httpx

    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    client = httpx.Client(trust_env=False, limits=limits)
    return (
        lambda urls, c: run_threads(lambda u: len(client.get(u).content), urls, c),
        client.close,
    )


def aiohttp_session() -> tuple[Download, Callable[[], None]]:
    import aiohttp

    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(_aiohttp_session(aiohttp))

    async def get(url: str, gate: asyncio.Semaphore) -> int:
        async with gate, session.get(url) as response:
            return len(await response.read())

    async def download(urls: list[str], concurrency: int) -> int:
        gate = asyncio.Semaphore(concurrency)
        return sum(await asyncio.gather(*(get(url, gate) for url in urls)))

    def close() -> None:
        loop.run_until_complete(session.close())
        loop.close()

    return (lambda urls, c: loop.run_until_complete(download(urls, c)), close)


async def _aiohttp_session(aiohttp: Any) -> Any:
    connector = aiohttp.TCPConnector(limit=16)
    return aiohttp.ClientSession(connector=connector)


CLIENTS: dict[str, Callable[[], tuple[Download, Callable[[], None]]]] = {
    "imgbatch Fetcher": imgbatch_fetcher,
    "urllib3 PoolManager": urllib3_poolmanager,
    "httpx.Client": httpx_client,
    "aiohttp": aiohttp_session,
}


# --- measuring -------------------------------------------------------------------------


def measure(
    download: Download, urls: list[str], concurrency: int, repeat: int, expected: int
) -> tuple[float, float]:
    """(median wall seconds, median client CPU seconds) over `repeat` runs after a warm-up."""
    assert download(urls[: max(concurrency, 8)], concurrency) > 0  # connections, imports
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        received = download(urls, concurrency)
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
        assert received == expected, (received, expected)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--distinct", type=int, default=16, help="distinct files, cycled")
    parser.add_argument("--megapixels", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", nargs="+", default=list(CLIENTS), choices=list(CLIENTS))
    parser.add_argument(
        "--stock-server", action="store_true", help="stock http.server: HTTP/1.0, backlog 5"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        paths = make_images(directory, min(args.distinct, args.images), args.megapixels)
        sizes = [path.stat().st_size for path in paths]
        context = multiprocessing.get_context("spawn")
        ports, stop = context.Queue(), context.Event()
        server = context.Process(
            target=serve, args=(tmp, ports, stop, args.stock_server), daemon=True
        )
        server.start()
        try:
            port = ports.get(timeout=30)
            names = [paths[i % len(paths)].name for i in range(args.images)]
            urls = [f"http://127.0.0.1:{port}/{name}" for name in names]
            expected = sum(sizes[i % len(paths)] for i in range(args.images))
            print(
                f"{args.images} images, {args.megapixels:g} MP, mean "
                f"{statistics.mean(sizes) / 1024:.0f} KiB; "
                f"{'stock http.server' if args.stock_server else 'ImageServer'} "
                f"in pid {server.pid}; median of {args.repeat} runs"
            )
            print(f"{'client':<22}{'conc':>5}{'wall s':>9}{'img/s':>9}{'CPU ms/img':>12}")
            for name in args.clients:
                download, close = CLIENTS[name]()
                try:
                    for concurrency in args.concurrency:
                        wall, cpu = measure(download, urls, concurrency, args.repeat, expected)
                        print(
                            f"{name:<22}{concurrency:>5}{wall:>9.2f}"
                            f"{args.images / wall:>9.0f}{cpu * 1000 / args.images:>12.2f}"
                        )
                finally:
                    close()
        finally:
            stop.set()
            server.join(timeout=10)
            if server.is_alive():
                server.terminate()


if __name__ == "__main__":
    main()
