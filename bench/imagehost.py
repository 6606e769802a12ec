"""A fast image host for benchmarks: uvicorn (uvloop + httptools) serving files from memory.

The image source stands for a CDN, which costs the service nothing; on one
small machine it shares the CPUs with imgbatch, so it must cost as little as
possible or it is counted against imgbatch. Server CPU per 0.5 MP image
(`bench/image_hosts.py`): aiohttp's static route with sendfile 0.87-1.15 ms,
aiohttp from memory 0.17-0.20 ms, uvicorn from memory 0.12-0.13 ms (two runs).
HTTP/1.1 keep-alive, a large listen backlog (Python's `http.server` speaks
HTTP/1.0 with a backlog of 5 and distorts timings with connection retries).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def serve_from_memory(directory: str, sock: socket.socket) -> None:
    """uvicorn serving the files of `directory`, read once into memory."""
    import uvicorn

    files = {"/" + p.name: p.read_bytes() for p in Path(directory).iterdir() if p.is_file()}
    not_found = {"type": "http.response.start", "status": 404, "headers": []}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = files.get(scope["path"])
        if body is None:
            await send(not_found)
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [(b"content-type", b"image/jpeg"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", lifespan="off", log_level="error", access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock])


class ImageHost:
    def __init__(self, base_url: str, pid: int) -> None:
        self.base_url = base_url
        self.pid = pid

    def url(self, path: str) -> str:
        return self.base_url + path

    def cpu_seconds(self) -> float:
        """User + system CPU the host has used so far (to report what it costs)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Server = Callable[[str, socket.socket], None]


@contextmanager
def image_host(directory: Path, server: Server = serve_from_memory) -> Iterator[ImageHost]:
    """Serve the files of `directory` with `server` in its own process on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    process = multiprocessing.get_context("fork").Process(
        target=server, args=(str(directory), sock), daemon=True
    )
    process.start()
    try:
        assert process.pid is not None
        yield ImageHost(f"http://127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        process.join(10)
        sock.close()


NGINX_CONF = """\
# bench/imagehost.py: nginx as the image host, one process (its CPU is the host's cost),
# files by sendfile, keep-alive for the whole run. Never the system service.
worker_processes 1;
master_process off;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    open_file_cache max=100000 inactive=600s;
    types {{ image/jpeg jpg; image/png png; image/webp webp; image/gif gif; image/avif avif; }}
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
    }}
}}
"""


@contextmanager
def nginx_host(directory: Path) -> Iterator[ImageHost]:
    """nginx (Debian's nginx-light: `scripts/system-packages.sh --bench`) serving the files
    of `directory` on a free loopback port, with a config and prefix of its own."""
    import shutil
    import subprocess
    import tempfile
    import time

    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise SystemExit("nginx is not installed: bash scripts/system-packages.sh --bench")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="imgbatch-nginx-") as prefix:
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, root=directory.resolve()))
        process = subprocess.Popen(
            [binary, "-p", prefix, "-c", str(conf), "-e", f"{prefix}/error.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"nginx did not start: {process.stderr.read().decode()}")  # type: ignore[union-attr]
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield ImageHost(f"http://127.0.0.1:{port}", process.pid)
        finally:
            process.terminate()
            process.wait(10)


HOSTS = {"nginx": nginx_host, "uvicorn": image_host}
