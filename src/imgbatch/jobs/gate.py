"""The worker process's back-off gate: while a backend everything needs is down, take no jobs.

A job that meets a down store gives its images back (see `pipeline`); without a gate
the process would dequeue the next job at once and give that back too, burning through
the queue. The gate closes for a pause that doubles with each fault in a row
(`IMGBATCH_RETRY_DELAY_SECONDS`, at most `IMGBATCH_RETRY_MAX_DELAY_SECONDS`); after it,
the next job is the probe, and its success opens the gate. Faults of backends that
concern only some images (an image host in its cool-down) are counted and logged but
do not close the gate. There is one gate per process, as each process has its own
connections; the queue adapter asks it before every dequeue.
"""

from __future__ import annotations

import logging
import threading
import time

from imgbatch import metrics
from imgbatch.config import Settings
from imgbatch.ledger import backoff_delay
from imgbatch.logs import OutageLog

log = logging.getLogger(__name__)

# Backends every job needs: while one is down, the process pauses taking jobs.
PAUSING = frozenset({"storage", "database"})
# Backends that log their own outages, per host (`fetching.hosts`): one process-wide
# "fetch unavailable" line would name whichever host came first and never end.
SELF_LOGGED = frozenset({"fetch"})


class BackendGate:
    """Per-backend outage state of this process: pause until, faults in a row, the log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self._streak: dict[str, int] = {}
        self._logs: dict[str, OutageLog] = {}

    def _log(self, backend: str) -> OutageLog:
        if backend not in self._logs:
            self._logs[backend] = OutageLog(log, backend)
        return self._logs[backend]

    def fault(self, backend: str, error: object, settings: Settings, given_back: int = 0) -> float:
        """A job met `backend` down: count it, log it (rate-limited), close the gate.

        Returns the pause (0 for a backend that does not pause the process).
        """
        metrics.backend_fault(backend, given_back)
        if backend not in SELF_LOGGED:
            self._log(backend).down(
                error, "images go back to the queue and are retried with back-off"
            )
        if backend not in PAUSING:
            return 0.0
        with self._lock:
            step = self._streak.get(backend, 0)
            self._streak[backend] = step + 1
            pause = backoff_delay(
                step, settings.retry_delay_seconds, settings.retry_max_delay_seconds
            )
            self._until[backend] = time.monotonic() + pause
        return pause

    def ok(self, backend: str) -> None:
        """`backend` worked: open the gate for it and log the end of an outage once."""
        if not self._streak.get(backend) and backend not in self._logs:
            return
        with self._lock:
            self._streak.pop(backend, None)
            self._until.pop(backend, None)
        if backend in self._logs:
            self._log(backend).up()

    def pause_left(self) -> float:
        """Seconds this process should still wait before taking a job (0: go)."""
        if not self._until:
            return 0.0
        now = time.monotonic()
        with self._lock:
            return max(0.0, max(self._until.values(), default=now) - now)


_GATES: dict[int, BackendGate] = {}


def process_gate() -> BackendGate:
    """This process's gate (a forked child gets a fresh one: its connections are its own)."""
    import os

    pid = os.getpid()
    gate = _GATES.get(pid)
    if gate is None:
        gate = _GATES[pid] = BackendGate()
    return gate
