"""A real HTTP/1.1 server on loopback for tests: serves image files and misbehaves on request.

Tests of the fetcher, the workers and the webhooks talk to it over real sockets
(after httpx's test suite), so timeouts, keep-alive, redirects and byte caps are
exercised for real. It records every request, so a test can assert that a
refused URL never reached it. Stdlib only.

Routes (any method unless noted; query parameters in brackets):
    /<file>                         a file from `directory` (GET/HEAD; 404 if missing)
    /status/<code>[?retry_after=S&location=URL]   that status, a tiny body
    /slow?seconds=S[&file=NAME]     waits S seconds before answering
    /drip?seconds=S&chunks=N        headers at once, then N bytes spread over S seconds
    /redirect?to=URL[&status=302]   a redirect to URL
    /flaky/<file>?fail=N[&status=503&retry_after=S]   fails N times, then the file
    /throttle/<file>?first=N[&status=429&retry_after=S]   the server's first N throttle
                                    requests (all files together) fail, then the file
    /big?bytes=N[&length=M|none]    N bytes; Content-Length M (a lie when M != N) or none
    /text                           a text/plain body
    POST to any other path          200 "ok" (a webhook receiver)
"""

from __future__ import annotations

import contextlib
import mimetypes
import socket
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024  # the stock 5 drops connections under load

    owner: ImageServer

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.owner.ssl_context is not None:
            # Handshake later, in the handler thread, so a slow client cannot
            # stall the accept loop.
            sock = self.owner.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        self.owner._opened(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        self.owner._closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-body is what several tests do on purpose


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end eventually
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    # --- plumbing --------------------------------------------------------------

    def _dispatch(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner._record(
            ReceivedRequest(self.command, self.path, {k: v for k, v in self.headers.items()}, body)
        )
        owner._enter()
        self._in_flight = True
        try:
            self._route()
        finally:
            self._done()

    def _done(self) -> None:
        """Leave `in_flight` once, as the answer's body starts out: a client may start its
        next request as soon as it has the last byte, maybe before this thread runs again,
        and that must not count as two requests at once."""
        if getattr(self, "_in_flight", False):
            self._in_flight = False
            self.server.owner._leave()

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        route, _, rest = url.path.lstrip("/").partition("/")
        try:
            handler = getattr(self, f"_route_{route}", None)
            if handler is not None:
                handler(rest, query)
            elif self.command in ("POST", "PUT"):
                self._send(200, b"ok\n")
            else:
                self._file(url.path.lstrip("/"))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True
        except (ValueError, KeyError) as exc:  # a test passed a bad parameter
            self._send(400, f"bad request: {exc}\n".encode())

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._done()
        if self.command != "HEAD" and not no_body:
            self.wfile.write(body)

    def _file(self, name: str) -> None:
        root = self.server.owner.directory.resolve()
        path = (root / name).resolve()
        if not name or not path.is_relative_to(root) or not path.is_file():
            self._send(404, b"not found\n")
            return
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, path.read_bytes(), content_type)

    # --- routes --------------------------------------------------------------------

    def _route_status(self, rest: str, query: dict[str, str]) -> None:
        headers = {}
        if "retry_after" in query:
            headers["Retry-After"] = query["retry_after"]
        if "location" in query:
            headers["Location"] = query["location"]
        self._send(int(rest), f"status {rest}\n".encode(), headers=headers)

    def _route_slow(self, rest: str, query: dict[str, str]) -> None:
        self.server.owner._stopping.wait(float(query.get("seconds", "1")))
        if "file" in query:
            self._file(query["file"])
        else:
            self._send(200, b"slow\n")

    def _route_drip(self, rest: str, query: dict[str, str]) -> None:
        chunks = int(query.get("chunks", "10"))
        pause = float(query.get("seconds", "1")) / max(chunks, 1)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(chunks))
        self.end_headers()
        self.wfile.flush()
        for _ in range(chunks):
            if self.server.owner._stopping.wait(pause):
                break
            self.wfile.write(b"x")
            self.wfile.flush()

    def _route_redirect(self, rest: str, query: dict[str, str]) -> None:
        status = int(query.get("status", "302"))
        self._send(status, b"redirecting\n", headers={"Location": query["to"]})

    def _route_flaky(self, rest: str, query: dict[str, str]) -> None:
        if self.server.owner._count(f"flaky:{rest}") <= int(query.get("fail", "1")):
            headers = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
            self._send(int(query.get("status", "503")), b"try again\n", headers=headers)
        else:
            self._file(rest)

    def _route_throttle(self, rest: str, query: dict[str, str]) -> None:
        if self.server.owner._count("throttle") <= int(query.get("first", "1")):
            headers = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
            self._send(int(query.get("status", "429")), b"slow down\n", headers=headers)
        else:
            self._file(rest)

    def _route_big(self, rest: str, query: dict[str, str]) -> None:
        size = int(query.get("bytes", str(1024 * 1024)))
        length = query.get("length", str(size))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if length == "none":
            self.send_header("Connection", "close")  # body ends when the connection does
        else:
            self.send_header("Content-Length", length)
        self.end_headers()
        if length != str(size):
            self.close_connection = True  # framing is broken on purpose
        if self.command == "HEAD":
            return
        block = b"\0" * _CHUNK
        sent = 0
        while sent < size and not self.server.owner._stopping.is_set():
            piece = block[: min(_CHUNK, size - sent)]
            self.wfile.write(piece)
            sent += len(piece)

    def _route_text(self, rest: str, query: dict[str, str]) -> None:
        self._send(200, b"hello, this is not an image\n")


class ImageServer:
    """A threaded HTTP/1.1 keep-alive server on a free loopback port.

    Use as a context manager, or `start()` / `stop()`. `requests` lists the
    request targets (path and query) in arrival order; `received` has methods,
    headers and bodies too; `connections` counts TCP connections accepted;
    `most_in_flight` is the most requests it was answering at once.
    Pass `ssl_context` (a server-side context) to serve https.
    """

    def __init__(
        self,
        directory: Path,
        host: str = "127.0.0.1",
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.host = host
        self.ssl_context = ssl_context
        self.requests: list[str] = []
        self.received: list[ReceivedRequest] = []
        self.connections = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {}
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("ImageServer is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def url(self, path: str = "/") -> str:
        """Absolute URL of `path` on this server."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def start(self) -> ImageServer:
        server_class = type(
            "_BoundServer",
            (_Server,),
            {"address_family": socket.AF_INET6 if ":" in self.host else socket.AF_INET},
        )
        self._stopping.clear()
        self._server = server_class((self.host, 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ImageServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake sleeping routes and cut open keep-alive connections."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):  # bypass SSLSocket.shutdown's unwrap
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def reset(self) -> None:
        """Forget recorded requests and flaky-route counters."""
        with self._lock:
            self.requests.clear()
            self.received.clear()
            self._counters.clear()
            self.most_in_flight = self.in_flight

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- called from handler threads ------------------------------------------------

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self.requests.append(request.path)
            self.received.append(request)

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _count(self, key: str) -> int:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + 1
            return self._counters[key]

    def _opened(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._open.add(sock)

    def _closed(self, sock: Any) -> None:
        with self._lock:
            self._open.discard(sock)
