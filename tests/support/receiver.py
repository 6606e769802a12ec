"""A real webhook receiver on 127.0.0.1 for tests: records everything, answers as scripted.

    with Receiver([500, 500, 200]) as hook:        # answers per call, then `default`
        ...upload with webhook_url=hook.url...
        first, second, third = hook.wait_for(3)

Answers are status codes or `Reply(status, headers, delay)`; a delay makes the
receiver hang before answering (released early when it stops). A Receiver that
is not started yet is "down": its port is reserved but nothing listens, so a
sender gets "connection refused" until `start()`. With `secret` (and any added with
`trust`), every request is checked with the `standardwebhooks` verifier and answered 401
when no trusted secret verifies it.
Stdlib plus standardwebhooks only.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to hang before answering


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it (header names lower-case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived
    verified: bool | None  # None: no secret to verify with
    answered: int  # the status it was answered (or was to be answered) with

    def json(self) -> Any:
        return json.loads(self.body)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A scriptable HTTP/1.1 webhook receiver bound to 127.0.0.1."""

    def __init__(
        self,
        answers: Sequence[int | Reply] = (),
        *,
        default: int | Reply = 200,
        secret: str | None = None,
        path: str = "/hook",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self._answers = [_reply(a) for a in answers]
        self._default = _reply(default)
        self._verifiers = [Webhook(secret)] if secret else []
        self._verifying = secret is not None
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> Receiver:
        server = _Server(("127.0.0.1", self.port), _handler_for(self))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # releases hanging answers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start() if self._server is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what arrived ---------------------------------------------------------------
    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Block until at least `count` requests arrived; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._received)} of {count} webhook requests arrived")
                self._arrived.wait(remaining)
            return list(self._received)

    # --- used by the handler -----------------------------------------------------------
    def _next_reply(self) -> Reply:
        with self._lock:
            return self._answers.pop(0) if self._answers else self._default

    def _verify(self, body: bytes, headers: dict[str, str]) -> bool | None:
        if not self._verifying:
            return None
        # A secret the test learns from the upload's answer may be trusted a moment after
        # the event is on its way: wait that moment before calling a signature bad.
        deadline = time.monotonic() + 2.0
        while True:
            with self._lock:
                verifiers = list(self._verifiers)
            for verifier in verifiers:
                try:
                    verifier.verify(body, headers)
                except WebhookVerificationError:
                    continue
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def trust(self, secret: str) -> None:
        """Also accept events signed with `secret` (an upload's own, from its 202 answer)."""
        with self._lock:
            self._verifiers.append(Webhook(secret))
            self._verifying = True

    def _record(self, received: Received) -> None:
        with self._arrived:
            self._received.append(received)
            self._arrived.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # senders hanging up on a slow answer is what some tests do on purpose


def _reply(answer: int | Reply) -> Reply:
    return answer if isinstance(answer, Reply) else Reply(status=answer)


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _handle(self) -> None:
            arrived = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            verified = receiver._verify(body, headers)
            reply = receiver._next_reply()
            status = 401 if verified is False else reply.status
            receiver._record(
                Received(self.command, self.path, headers, body, arrived, verified, status)
            )
            if reply.delay and receiver._closing.wait(reply.delay):
                self.close_connection = True
                return  # stopping: hang up without answering
            payload = b"bad signature" if verified is False else b"ok"
            try:
                self.send_response(status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                self.close_connection = True  # the sender gave up (timeout)

        do_POST = do_PUT = do_GET = _handle

    return Handler
