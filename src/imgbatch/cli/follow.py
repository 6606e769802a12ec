"""Following a request until it is final: a live bar on a terminal, a line now and then in logs.

A server that stops answering for a moment (a restart) is waited for, up to `GIVE_UP_AFTER`
seconds; Ctrl-C stops the waiting, never the request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .client import Client, Unreachable
from .report import FINAL, err, progress_line

POLL_SECONDS = 1.0
LOG_EVERY_SECONDS = 5.0  # off a terminal: one line this often, plus the first and the last
GIVE_UP_AFTER = 60.0


def _poller(client: Client, request_id: str) -> Callable[[], dict[str, Any]]:
    path = f"/api/status/{request_id}?limit=1"
    down_since: float | None = None

    def poll() -> dict[str, Any]:
        nonlocal down_since
        while True:
            try:
                doc: dict[str, Any] = client.call("GET", path)
                down_since = None
                return doc
            except Unreachable:
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > GIVE_UP_AFTER:
                    raise
                time.sleep(POLL_SECONDS)

    return poll


def wait_final(client: Client, request_id: str) -> dict[str, Any]:
    """Poll until the request is final; returns its last status document (first product only)."""
    poll = _poller(client, request_id)
    doc = poll()
    if err.is_terminal:
        return _with_bar(poll, doc, request_id)
    return _with_lines(poll, doc, request_id)


def _done(doc: dict[str, Any]) -> int:
    p = doc["progress"]
    return int(p["total"]) - int(p.get("pending", 0))


def _with_bar(
    poll: Callable[[], dict[str, Any]], doc: dict[str, Any], request_id: str
) -> dict[str, Any]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(
            request_id[:8], total=doc["progress"]["total"], completed=_done(doc), detail=""
        )
        while doc["status"] not in FINAL:
            time.sleep(POLL_SECONDS)
            doc = poll()
            failed = doc["progress"].get("failed", 0)
            bar.update(
                task,
                completed=_done(doc),
                detail=f"{doc['status']}" + (f", {failed} failed" if failed else ""),
            )
    return doc


def _with_lines(
    poll: Callable[[], dict[str, Any]], doc: dict[str, Any], request_id: str
) -> dict[str, Any]:
    err.print(f"{request_id}: {progress_line(doc)}")
    last = time.monotonic()
    while doc["status"] not in FINAL:
        time.sleep(POLL_SECONDS)
        doc = poll()
        if doc["status"] in FINAL or time.monotonic() - last >= LOG_EVERY_SECONDS:
            err.print(f"{request_id}: {progress_line(doc)}")
            last = time.monotonic()
    return doc
