"""uvicorn's h11 protocol with deadlines on what a client sends: its request head and body.

uvicorn times out idle keep-alive connections, but not a connection that sends half a
request head and then nothing (or one byte now and then): such connections were held
for as long as the client liked. Here every request head must be complete within
`IMGBATCH_REQUEST_HEAD_TIMEOUT` (counted from the connection, or from the first byte
of a next request on a kept-alive one), else the client gets `408` and the connection
is closed. A body that is still arriving `body_timeout` seconds after its head is cut
off too: uploads answer 408 themselves sooner (`api.bodies`), this is the backstop for
bodies that no route reads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 40\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"the request head did not arrive in time\n"
)


class DeadlineH11Protocol(H11Protocol):
    """H11Protocol plus a head deadline and a body backstop (class attributes, in seconds)."""

    head_timeout: float = 10.0
    body_timeout: float = 310.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "head", "body" or None

    def _arm(self, what: str, seconds: float) -> None:
        self._disarm()
        self._waiting_for = what
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._waiting_for = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("head", self.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def _follow(self) -> None:
        """Re-arm for what the client owes now: a head, a body, or nothing."""
        if self.transport.is_closing():
            self._disarm()
            return
        theirs = self.conn.their_state
        if theirs is h11.SEND_BODY:
            if self._waiting_for != "body":
                self._arm("body", self.body_timeout)
        elif theirs is h11.IDLE and self.conn.our_state is h11.IDLE:
            # Between requests: idle is uvicorn's keep-alive timeout; the head's clock
            # starts with the first byte of the next request.
            if self.conn.trailing_data[0] or self._waiting_for == "head":
                if self._waiting_for != "head":
                    self._arm("head", self.head_timeout)
            else:
                self._disarm()
        else:  # the request is in; the response is ours to send
            self._disarm()

    def _expired(self) -> None:
        what, self._deadline, self._waiting_for = self._waiting_for, None, None
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        if what == "head":
            log.info("closing %s: no complete request head in %g s", client, self.head_timeout)
            self.transport.write(_TIMEOUT_ANSWER)
        else:
            log.info("closing %s: request body not complete in %g s", client, self.body_timeout)
        self.transport.close()


def protocol_with_deadlines(head_timeout: float, body_timeout: float) -> type[H11Protocol]:
    """The protocol class to give uvicorn (`http=`), with these deadlines."""
    return type(
        "H11WithDeadlines",
        (DeadlineH11Protocol,),
        {"head_timeout": head_timeout, "body_timeout": body_timeout},
    )
