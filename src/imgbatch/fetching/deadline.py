"""The total deadline of a fetch or webhook POST, enforced by cutting its sockets.

Socket timeouts bound each recv(), not a whole response; this watchdog bounds
the whole exchange, so a server that drips bytes cannot hold a worker forever.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection


@dataclass(eq=False)
class Guard:
    """One request's deadline and the connections it is using."""

    deadline: float
    watchdog: Watchdog
    connections: list[HTTPConnection] = field(default_factory=list)
    active: bool = True
    fired: bool = False

    def expired(self) -> bool:
        """True once the watchdog cut the connections or the deadline has passed."""
        return self.fired or time.monotonic() >= self.deadline


_current_guard: ContextVar[Guard | None] = ContextVar("imgbatch_fetch_guard", default=None)


def _cut(connection: HTTPConnection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # socket.socket's, not SSLSocket's unwrapping one
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Watchdog:
    """Shuts down the sockets of requests that overrun their deadline.

    Socket timeouts bound each recv(), not a response: a server dripping one
    byte per second keeps a read (headers or body) alive forever. One thread
    sleeps until the earliest deadline and cuts the connections of the guards
    still active then; the blocked reader sees EOF and the fetch fails `timeout`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Guard]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._wake_at = float("inf")  # when the thread will next look; notify only if sooner

    @contextlib.contextmanager
    def guard(self, deadline: float) -> Iterator[Guard]:
        """Guard the requests made in this block (this context) until `deadline`."""
        guard = Guard(deadline, self)
        with self._cond:
            while self._heap and not self._heap[0][2].active:
                heapq.heappop(self._heap)  # finished guards, dropped lazily
            heapq.heappush(self._heap, (deadline, next(self._seq), guard))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog")
                self._thread.daemon = True
                self._thread.start()
            elif deadline < self._wake_at:
                self._cond.notify()
        token = _current_guard.set(guard)
        try:
            yield guard
        finally:
            _current_guard.reset(token)
            with self._cond:
                guard.active = False
                guard.connections.clear()

    def watch(self, guard: Guard, connection: HTTPConnection) -> None:
        with self._cond:
            if guard.fired:
                _cut(connection)
            elif guard.active and connection not in guard.connections:
                guard.connections.append(connection)

    def unwatch(self, guard: Guard, connection: HTTPConnection | None) -> None:
        """Forget `connection` before it goes back to the pool for another request."""
        with self._cond, contextlib.suppress(ValueError):
            guard.connections.remove(connection)  # type: ignore[arg-type]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now or not self._heap[0][2].active):
                    _, _, guard = heapq.heappop(self._heap)
                    if guard.active:
                        guard.fired = True
                        for connection in guard.connections:
                            _cut(connection)
                self._wake_at = self._heap[0][0] if self._heap else float("inf")
                self._cond.wait(self._wake_at - now if self._heap else None)


def _watch_current(connection: HTTPConnection) -> None:
    guard = _current_guard.get()
    if guard is not None:
        guard.watchdog.watch(guard, connection)


class GuardedHTTPConnection(HTTPConnection):
    """A connection the current guard (if any) watches from connect or request on."""

    def connect(self) -> None:
        super().connect()
        _watch_current(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch_current(self)
        super().request(*args, **kwargs)


class GuardedHTTPSConnection(GuardedHTTPConnection, HTTPSConnection):
    """The TLS twin: `GuardedHTTPConnection`'s hooks around `HTTPSConnection`."""
