"""Politeness towards image hosts, shared by every process of one machine: slots and cool-downs.

A 50,000-image catalogue usually lives on one host, and every worker process of a
machine would otherwise download from it at once; a host that answers 429 would be
asked again by every process. Two pieces of per-host state, kept in files under one
directory (`IMGBATCH_DATA_DIR/hosts`), so all processes of the machine share them
without a server:

- **Slots**: at most `per_host` downloads in flight per host. Slot i of a host is byte
  `bucket * 1024 + i` of the file `slots`, held with a Linux open-file-description lock
  (`F_OFD_SETLK`): per open file, so threads and processes alike exclude each other, and
  released by the kernel when the holder closes it or dies (`kill -9` leaks nothing).
  Hosts hash into 2^20 buckets; two hosts in one bucket share a limit (harmless, rare).
- **Cool-downs**: `<hash>.state`, written only when a host has trouble (throttled with
  429 / 503 + Retry-After, or a run of connection failures) and removed when it answers
  again; read (usually: found missing) before every download. Updates are made under an
  exclusive lock on `<hash>.lock` and published with an atomic rename, so a reader never
  sees half a file.

A host is an origin, `scheme://name:port`. What holds across machines: each machine
keeps its own slots and cool-downs, so a host sees at most machines x `per_host`
downloads, and each machine learns of a 429 by itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import random
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_PER_HOST = 1024  # slots per bucket in the slots file
_BUCKETS = 1 << 20
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)  # Linux; the constant is 37 on every arch


@dataclass(frozen=True)
class HostState:
    """A host's trouble, as the state file holds it (all zero: no trouble)."""

    origin: str = ""
    until: float = 0.0  # epoch seconds: cooling down until then
    reason: str = ""  # why, for logs and messages
    failures: int = 0  # connection failures in a row
    streak: int = 0  # cool-downs in a row for unreachability (each twice as long)
    since: float = 0.0  # epoch seconds: when this spell of trouble began

    def left(self, now: float | None = None) -> float:
        """Seconds of cool-down left (0: the host may be asked)."""
        return max(0.0, self.until - (time.time() if now is None else now))

    @property
    def troubled(self) -> bool:
        return bool(self.until or self.failures)


class SlotTimeout(Exception):
    """Every slot of the host stayed busy for the whole wait."""


class HostBoard:
    """Per-host download slots and cool-downs of one machine (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        per_host: int,
        *,
        first_delay: float = 5.0,
        max_delay: float = 120.0,
        longest: float = 600.0,
        failures_to_cool: int = 3,
        slot_wait: float = 30.0,
    ) -> None:
        if per_host > MAX_PER_HOST:
            raise ValueError(f"at most {MAX_PER_HOST} downloads per host")
        self.directory = Path(directory)
        self.per_host = per_host  # 0: no limit
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.longest = longest  # no cool-down longer than images may wait
        self.failures_to_cool = failures_to_cool
        self.slot_wait = slot_wait
        self.directory.mkdir(parents=True, exist_ok=True)
        self._prefix = f"{self.directory}{os.sep}"
        self._slots = f"{self._prefix}slots"

    # --- slots -----------------------------------------------------------------------

    @contextlib.contextmanager
    def slot(self, origin: str) -> Iterator[None]:
        """Hold one of the host's `per_host` slots for the block; SlotTimeout after `slot_wait`."""
        if self.per_host <= 0:
            yield
            return
        fd = self._acquire(origin)
        try:
            yield
        finally:
            os.close(fd)  # releases the lock

    def _acquire(self, origin: str) -> int:
        base = (_hash(origin) % _BUCKETS) * MAX_PER_HOST
        deadline = time.monotonic() + self.slot_wait
        pause = 0.002
        start = random.randrange(self.per_host)  # spread first tries over the slots
        while True:
            fd = os.open(self._slots, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            for i in range(self.per_host):
                if _try_lock(fd, base + (start + i) % self.per_host):
                    return fd
            os.close(fd)
            if time.monotonic() >= deadline:
                raise SlotTimeout(f"all {self.per_host} download slots for {origin} stayed busy")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    # --- cool-downs ------------------------------------------------------------------------

    def state(self, origin: str) -> HostState:
        """The host's trouble (all zero when it has none): one failed open in the usual case."""
        try:
            fd = os.open(f"{self._prefix}{_name(origin)}.state", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return HostState(origin)
        try:
            raw = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        try:
            return HostState(**json.loads(raw))
        except (ValueError, TypeError):
            return HostState(origin)  # a file from another release: treated as no trouble

    def throttled(self, origin: str, seconds: float, reason: str) -> HostState:
        """The host asked us to come back in `seconds`: it cools down at least that long."""
        seconds = min(max(seconds, 1.0), self.longest)

        def change(old: HostState, now: float) -> HostState:
            until = max(old.until, now + seconds)
            return HostState(origin, until, reason, old.failures, old.streak, old.since or now)

        return self._update(origin, change)

    def unreachable(self, origin: str, reason: str) -> HostState:
        """A connection to the host failed; a run of `failures_to_cool` cools it down.

        Each cool-down of a run is twice as long as the last (`first_delay` up to
        `max_delay`), until the host answers again.
        """

        def change(old: HostState, now: float) -> HostState:
            failures = old.failures + 1
            if failures < self.failures_to_cool or old.left(now) > 0:
                return HostState(
                    origin, old.until, old.reason, failures, old.streak, old.since or now
                )
            pause = min(self.first_delay * 2.0 ** min(old.streak, 32), self.max_delay, self.longest)
            return HostState(origin, now + pause, reason, 0, old.streak + 1, old.since or now)

        return self._update(origin, change)

    def answered(self, origin: str, seen: HostState) -> None:
        """The host answered: forget its trouble (a no-op, no I/O, when it had none)."""
        if not seen.troubled:
            return
        path = self.directory / f"{_name(origin)}.state"
        with self._locked(origin):
            current = self.state(origin)
            if current.left() > 0:
                return  # a newer cool-down (another process's 429) stands
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if current.since:
            log.info(
                "image host %s answers again after %.0f s of trouble",
                origin,
                time.time() - current.since,
            )

    def cooling(self) -> list[HostState]:
        """Every host cooling down now, for /metrics."""
        now = time.time()
        found = []
        for path in self.directory.glob("*.state"):
            with contextlib.suppress(OSError, ValueError, TypeError):
                state = HostState(**json.loads(path.read_bytes()))
                if state.left(now) > 0:
                    found.append(state)
        return sorted(found, key=lambda s: s.origin)

    def _update(self, origin: str, change: Callable[[HostState, float], HostState]) -> HostState:
        """Read, change and publish the host's state under its lock; log a new cool-down once."""
        with self._locked(origin):
            old = self.state(origin)
            now = time.time()
            new = change(old, now)
            path = self.directory / f"{_name(origin)}.state"
            temp = path.with_suffix(f".{os.getpid()}.tmp")
            temp.write_bytes(json.dumps(asdict(new)).encode())
            os.replace(temp, path)
        if new.left(now) > 0 and old.left(now) <= 0:  # this process started the cool-down
            log.warning(
                "image host %s cooling down for %.0f s (%s): its images go back to the queue, "
                "other hosts' images go on",
                origin,
                new.left(now),
                new.reason,
            )
        return new

    @contextlib.contextmanager
    def _locked(self, origin: str) -> Iterator[None]:
        fd = os.open(
            self.directory / f"{_name(origin)}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _hash(origin: str) -> int:
    return int.from_bytes(hashlib.blake2b(origin.encode(), digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=4096)
def _name(origin: str) -> str:
    return hashlib.blake2b(origin.encode(), digest_size=12).hexdigest()


def _try_lock(fd: int, offset: int) -> bool:
    """Take byte `offset` of the file open as `fd`, without waiting (an OFD write lock)."""
    request = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        fcntl.fcntl(fd, _OFD_SETLK, request)
    except OSError:
        return False
    return True
