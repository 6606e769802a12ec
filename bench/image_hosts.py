"""Which image host costs the benchmarks least: server CPU per image, same client, same files.

The benchmarks' image host stands for a CDN but shares this machine's cores with
imgbatch, so its CPU counts against imgbatch. This compares aiohttp's static route
(sendfile) with aiohttp and uvicorn serving the same files from memory, fetched
one after another by imgbatch's own Fetcher.

    .venv/bin/python bench/image_hosts.py --images 600 --megapixels 0.5
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from imagehost import Server, image_host, serve_from_memory  # noqa: E402
from throughput import photographs  # noqa: E402

from imgbatch.fetching import AddressPolicy, Fetcher, FetchLimits  # noqa: E402


def _aiohttp_static(directory: str, sock: socket.socket) -> None:
    from aiohttp import web

    app = web.Application()
    app.router.add_static("/", directory)
    web.run_app(app, sock=sock, print=None, access_log=None)


def _aiohttp_memory(directory: str, sock: socket.socket) -> None:
    from aiohttp import web

    files = {"/" + p.name: p.read_bytes() for p in Path(directory).iterdir()}

    async def handler(request: web.Request) -> web.Response:
        body = files.get(request.path)
        if body is None:
            return web.Response(status=404)
        return web.Response(body=body, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{name}", handler)
    web.run_app(app, sock=sock, print=None, access_log=None)


HOSTS: dict[str, Server] = {
    "aiohttp static (sendfile)": _aiohttp_static,
    "aiohttp from memory": _aiohttp_memory,
    "uvicorn from memory (bench/imagehost.py)": serve_from_memory,
}


def measure(server: Server, paths: list[Path]) -> tuple[float, float]:
    """(server CPU ms, client CPU ms) per image."""
    with (
        image_host(paths[0].parent, server) as host,
        Fetcher(AddressPolicy(allow_private=True), FetchLimits()) as fetcher,
    ):
        urls = [host.url("/" + p.name) for p in paths]
        for url in urls[:20]:  # warm up (and wait for the server to start)
            fetcher.fetch(url)
        server_cpu, client_cpu = host.cpu_seconds(), time.process_time()
        for url in urls:
            fetcher.fetch(url)
        return (
            1000 * (host.cpu_seconds() - server_cpu) / len(urls),
            1000 * (time.process_time() - client_cpu) / len(urls),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--megapixels", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = photographs(args.megapixels, args.images, Path(tmp))
        print(f"{args.images} photos of {args.megapixels} MP, CPU ms per image")
        print(f"{'host':42} {'server':>7} {'client':>7}")
        for name, server in HOSTS.items():
            server_ms, client_ms = measure(server, paths)
            print(f"{name:42} {server_ms:7.2f} {client_ms:7.2f}", flush=True)


if __name__ == "__main__":
    main()
