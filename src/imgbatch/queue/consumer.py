"""Huey's consumer, hardened: children die with their parent, outages back off quietly, a gate.

- Every forked child (image workers and Huey's scheduler) asks Linux to kill it when
  its parent dies (`PR_SET_PDEATHSIG`), and checks its parent's pid between jobs: a
  `kill -9` of the worker's main process leaves no job process behind, which would
  keep taking jobs beyond the configured concurrency. A consumer started by `serve`
  also stops when `serve` is gone (`parent_pid`).
- A queue that cannot be read (Redis restarted, flushed connection) is retried with a
  delay doubling up to `MAX_OUTAGE_DELAY`, logged once per outage and once on recovery
  (Huey logged a full traceback ten times a second per process).
- Before each dequeue the worker asks `pause()`: while a backend every job needs is
  down (the store, the ledger), the process waits instead of burning through the queue.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from huey.consumer import Consumer, ConsumerStopped, ProcessEnvironment, Scheduler, Worker

from imgbatch.errors import first_line
from imgbatch.logs import OutageLog

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
FIRST_OUTAGE_DELAY = 0.1
MAX_OUTAGE_DELAY = 5.0
_MAX_GATE_WAIT = 1.0  # wake up at least this often while paused, to notice a stop


def die_with_parent(sig: int = signal.SIGKILL, expected_parent: int | None = None) -> None:
    """Linux: have the kernel send `sig` to this process when its parent dies.

    If the parent already died before the call (the race the kernel cannot close),
    exit now. Elsewhere (no prctl) the callers' parent-pid checks still apply.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(0)


@dataclass
class ConsumerHooks:
    """What the worker service plugs into the consumer (the queue knows nothing of jobs)."""

    pause: Callable[[], float] = lambda: 0.0  # seconds to wait before taking a job
    on_queue_fault: Callable[[], None] | None = None  # counted in /metrics by the caller
    parent_pid: int | None = None  # the consumer exits when this process is gone (serve)


class _Orphaned(KeyboardInterrupt):
    """The parent is gone: leave through Huey's normal exit path (shutdown hooks run)."""


class _ChildEnvironment(ProcessEnvironment):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.parent = os.getpid()  # built in the consumer's main process, before any fork

    def init_child(self, process: Any) -> None:
        die_with_parent(signal.SIGKILL, self.parent)
        super().init_child(process)


class _Worker(Worker):
    hooks = ConsumerHooks()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parent = os.getpid()
        self.outage = OutageLog(log, "queue")
        self.outage_delay = FIRST_OUTAGE_DELAY

    def loop(self, now: Any = None) -> None:
        if os.getppid() != self.parent and self.parent != os.getpid():
            raise _Orphaned
        pause = self.hooks.pause()
        if pause > 0:
            self.stop_flag.wait(min(pause, _MAX_GATE_WAIT))
            return
        try:
            task = self.huey.dequeue()
        except Exception as exc:
            self.outage.down(
                f"{type(exc).__name__}: {first_line(exc)}", "waiting for it with back-off"
            )
            if self.hooks.on_queue_fault is not None:
                self.hooks.on_queue_fault()
            self.stop_flag.wait(self.outage_delay)
            self.outage_delay = min(self.outage_delay * 2, MAX_OUTAGE_DELAY)
            return
        self.outage_delay = FIRST_OUTAGE_DELAY
        self.outage.up()
        if task is not None:
            self.delay = self.default_delay
            self.task_count += 1
            try:
                self.huey.execute(task, now)
            except Exception:
                self._logger.exception("Unhandled error during execution of task %s.", task.id)
        elif not self.huey.storage.blocking:
            self.sleep()


class _Scheduler(Scheduler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parent = os.getpid()

    def loop(self, now: Any = None) -> None:
        if os.getppid() != self.parent and self.parent != os.getpid():
            raise _Orphaned
        super().loop(now)


def build_consumer(
    huey: Any,
    workers: int,
    worker_type: str,
    on_start: Callable[[], None] | None,
    hooks: ConsumerHooks,
    **options: Any,
) -> Consumer:
    """A Huey consumer with the hardening above; `on_start` runs after the workers forked."""

    class _HookedWorker(_Worker):
        pass

    _HookedWorker.hooks = hooks

    class _Consumer(Consumer):
        worker_class = _HookedWorker
        scheduler_class = _Scheduler

        def get_environment(self, kind: str) -> Any:
            if kind == "process":
                return _ChildEnvironment(self._graceful_sig, self._interrupt_sig)
            return super().get_environment(kind)

        def start(self) -> None:
            super().start()
            if on_start is not None:
                on_start()

        def loop(self, health_check_ts: Any = None) -> Any:
            if hooks.parent_pid is not None and os.getppid() != hooks.parent_pid:
                log.warning("parent process %d is gone: stopping", hooks.parent_pid)
                self.stop(graceful=False)
                raise ConsumerStopped
            return super().loop(health_check_ts)

    return _Consumer(huey, workers=workers, worker_type=worker_type, **options)
