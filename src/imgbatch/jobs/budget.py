"""A CPU-time budget per image, and leases kept alive while a job runs: one thread per worker.

Some files cost far more to decode than their size suggests (a progressive JPEG with
thousands of scans, a huge AVIF or PNG): a 534 KB JPEG took 155 CPU-seconds. While
the main thread was inside the decoder nothing renewed the job's leases, so they ran
out, the sweeper gave the image to another worker, and three attempts ran at once.

This guard thread, started once in each worker process, wakes every `POLL` seconds
while a job runs. It renews the job's leases (a quarter of the lease at a time, as the
main thread does between steps), so no second attempt starts while the first is alive,
and it reads the CPU time of the thread working on the current image
(`pthread_getcpuclockid`: decoders release the GIL, so this thread runs meanwhile).
Past `IMGBATCH_MAX_IMAGE_SECONDS` it calls `condemn` — the pipeline records the image as
`too_complex` and gives the job's other images back — and, in a worker process, ends the
process: the decoder cannot be interrupted, and Huey's consumer starts a fresh process.

A decoder that held the GIL would stop this thread too; for that case, a worker process
also runs under `RLIMIT_CPU`, raised before each image to what the process has used plus
1.5 budgets: past it the kernel ends the process (SIGXCPU) and the image's lease runs out
as for any crash (its attempt counts; `IMGBATCH_MAX_ATTEMPTS` bounds the retries).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from imgbatch.ledger import ClaimedImage

log = logging.getLogger(__name__)

POLL = 0.25  # seconds between checks while a job runs
EXIT_STATUS = 75  # a worker process ended by its guard (EX_TEMPFAIL: it is replaced)


class Leases(Protocol):
    """What the guard needs of a job's claims (`pipeline._Leases`)."""

    def keep(self) -> None: ...


# Called with the image over budget, the CPU seconds it used and the job's leases.
Condemn = Callable[[ClaimedImage, float, Leases], None]


class ImageGuard:
    """The budget and lease keeper of one process (`for_process`)."""

    def __init__(self, budget: float, condemn: Condemn, *, end_process: bool) -> None:
        self.budget = budget  # CPU seconds per image; 0 turns the budget off
        self.condemn = condemn
        self.end_process = end_process
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._leases: Leases | None = None
        self._image: ClaimedImage | None = None
        self._clock: int | None = None
        self._started = 0.0
        thread = threading.Thread(target=self._run, name="image-guard", daemon=True)
        thread.start()

    @contextlib.contextmanager
    def job(self, leases: Leases) -> Iterator[None]:
        """Keep the job's leases alive while it runs."""
        with self._lock:
            self._leases = leases
            self._wake.set()
        try:
            yield
        finally:
            with self._lock:
                self._leases = None
                self._image = None

    @contextlib.contextmanager
    def image(self, claimed: ClaimedImage) -> Iterator[None]:
        """Hold the current thread to the budget while it works on `claimed`."""
        if self.budget <= 0:
            yield
            return
        clock = time.pthread_getcpuclockid(threading.get_ident())
        before = _cpu_backstop(self.budget) if self.end_process else None
        with self._lock:
            self._image, self._clock = claimed, clock
            self._started = time.clock_gettime(clock)
        try:
            yield
        finally:
            with self._lock:
                self._image = self._clock = None
            if before is not None:
                resource.setrlimit(resource.RLIMIT_CPU, before)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:  # `job` sets the leases and the event under this lock too
                leases, image, clock, started = (
                    self._leases,
                    self._image,
                    self._clock,
                    self._started,
                )
                if leases is None:  # between jobs: sleep until the next one
                    self._wake.clear()
                    continue
            try:
                leases.keep()
                if image is not None and clock is not None:
                    used = time.clock_gettime(clock) - started
                    if used > self.budget and self._still(image):
                        self._condemn(image, used, leases)
            except Exception:  # the database may be down: the next round tries again
                log.exception("image guard round failed")
            time.sleep(POLL)

    def _still(self, image: ClaimedImage) -> bool:
        with self._lock:
            return self._image is image

    def _condemn(self, image: ClaimedImage, used: float, leases: Leases) -> None:
        extra = {"request_id": image.request_id, "image_id": image.id}
        log.warning("image over its CPU budget (%.1f s): failed too_complex", used, extra=extra)
        try:
            self.condemn(image, used, leases)
        finally:
            if self.end_process:
                logging.shutdown()
                os._exit(EXIT_STATUS)  # the decoder cannot be interrupted: end the process
            with self._lock:  # a thread worker goes on; its result will be refused
                if self._image is image:
                    self._image = None


def _cpu_backstop(budget: float) -> tuple[int, int]:
    """RLIMIT_CPU at what this process used so far plus 1.5 budgets (and 5 s), for the
    current image only; returns the limits to restore after it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    limit = int(usage.ru_utime + usage.ru_stime + 1.5 * budget + 5)
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))
    return soft, hard


_guards: dict[tuple[int, int], ImageGuard] = {}


def for_process(budget: float, condemn: Condemn, *, end_process: bool) -> ImageGuard:
    """This worker's guard, started on first use: one per process (a forked worker starts
    its own), or one per thread where jobs run in threads (`end_process=False`)."""
    key = (os.getpid(), 0 if end_process else threading.get_ident())
    guard = _guards.get(key)
    if guard is None:
        guard = _guards[key] = ImageGuard(budget, condemn, end_process=end_process)
    return guard
