"""Receiving an upload's body: spooled, capped, within a deadline and at a minimum rate.

A body takes as long as its client wants to send it. When uploads took their parsing
slot before reading, four clients that sent upload headers and one line, then nothing,
held every slot for as long as they stayed connected and every other upload waited.
Now the body is received first, outside any slot, into a temporary file once it is past
`SPOOL_IN_MEMORY` (uploads that wait hold disk, not memory), and the upload takes a
parsing slot only to parse. A body that is not complete within `IMGBATCH_UPLOAD_TIMEOUT`,
or that falls behind `IMGBATCH_UPLOAD_MIN_RATE` bytes per second on average (checked
from `RATE_GRACE_SECONDS` on), is answered `408 upload_timeout` and the connection closed.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from typing import IO

from starlette.requests import Request

from imgbatch.errors import ApiError

SPOOL_IN_MEMORY = 1024 * 1024  # bodies past this wait for their parsing slot on disk
RATE_GRACE_SECONDS = 5.0  # the first seconds of a body are not held to the minimum rate


@dataclass(frozen=True)
class BodyLimits:
    """How much, how long and how slowly a body may arrive."""

    cap: int  # bytes; past it 413
    timeout: float  # seconds for the whole body
    min_rate: float  # bytes per second on average since the head; 0 turns the check off
    grace: float = RATE_GRACE_SECONDS


def next_wait(elapsed: float, received: int, limits: BodyLimits) -> float:
    """Seconds the next chunk may take before the body is late or too slow (<= 0: it is).

    With `received` bytes after `elapsed` seconds and nothing more, the body breaks
    the rate rule (`received >= min_rate * t` for every t past the grace period) at
    `max(grace, received / min_rate)`, and the deadline at `timeout`.
    """
    due = limits.timeout
    if limits.min_rate > 0:
        due = min(due, max(limits.grace, received / limits.min_rate))
    return due - elapsed


def _too_late(limits: BodyLimits, received: int, elapsed: float) -> ApiError:
    if elapsed >= limits.timeout:
        why = f"it was not complete within {limits.timeout:g} s"
    else:
        why = (
            f"it arrived slower than {limits.min_rate:g} bytes per second "
            f"({received} bytes in {elapsed:.0f} s)"
        )
    return ApiError(
        408,
        "upload_timeout",
        f"the upload body was dropped: {why}",
        headers={"Connection": "close"},
    )


async def receive_body(request: Request, limits: BodyLimits) -> IO[bytes]:
    """The whole body in a spooled temporary file, positioned at its start (caller closes it).

    Raises `ApiError` 413 past the cap (a declared `Content-Length` over it before
    reading anything), 408 when the body is late or too slow, 400 when the client
    hung up mid-body.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.cap:
        raise ApiError(413, "too_large", f"the upload is larger than {limits.cap} bytes")
    loop = asyncio.get_running_loop()
    started = loop.time()
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - returned
    received = 0
    try:
        while True:
            wait = next_wait(loop.time() - started, received, limits)
            if wait <= 0:
                raise _too_late(limits, received, loop.time() - started)
            try:
                message = await asyncio.wait_for(request.receive(), wait)
            except TimeoutError:
                raise _too_late(limits, received, loop.time() - started) from None
            if message["type"] == "http.disconnect":
                raise ApiError(400, "incomplete_body", "the client hung up before the body ended")
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limits.cap:
                raise ApiError(413, "too_large", f"the upload is larger than {limits.cap} bytes")
            spool.write(chunk)
            if not message.get("more_body", False):
                break
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool
