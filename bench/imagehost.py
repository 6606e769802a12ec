"""A fast static image host for benchmarks: aiohttp with sendfile, in its own process.

The test suite's ImageServer is a threaded stdlib server that shares the GIL with whatever
runs beside it; a benchmark wants the image source to cost as little CPU as a CDN would,
so that what is measured is imgbatch. HTTP/1.1 keep-alive, a large listen backlog.
"""

from __future__ import annotations

import multiprocessing
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _serve(directory: str, sock: socket.socket) -> None:
    from aiohttp import web

    app = web.Application()
    app.router.add_static("/", directory, follow_symlinks=False)
    web.run_app(app, sock=sock, backlog=2048, print=None, access_log=None, handle_signals=True)


class ImageHost:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def url(self, path: str) -> str:
        return self.base_url + path


@contextmanager
def image_host(directory: Path) -> Iterator[ImageHost]:
    """Serve `directory` on a free loopback port until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    process = multiprocessing.get_context("fork").Process(
        target=_serve, args=(str(directory), sock), daemon=True
    )
    process.start()
    try:
        yield ImageHost(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.join(10)
        sock.close()
