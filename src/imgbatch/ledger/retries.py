"""Back-off arithmetic for work a backend's fault gave back: pure functions, no I/O.

An image whose backend failed goes back to `pending` with a delay. Delays grow
exponentially while the backend stays down, and the image fails only once its
fault streak is older than the deadline of that kind of backend
(`IMGBATCH_STORAGE_RETRY_SECONDS`, ...). The streak's start is kept on the image
(`fault_since`), so the schedule survives any number of workers and restarts:
waiting as long again as the streak already lasted doubles it at every try,
without a counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """How one kind of backend fault is retried."""

    first_delay: float  # seconds before the first retry
    max_delay: float  # no wait longer than this
    deadline: float  # seconds since the streak began after which the image fails


@dataclass(frozen=True)
class GiveBack:
    """Release the image: claimable again at `retry_at`; its streak began at `since`."""

    retry_at: datetime
    since: datetime


@dataclass(frozen=True)
class GiveUp:
    """The backend stayed down past the deadline: the image fails with the last error."""

    since: datetime


def backoff_delay(step: int, first: float, cap: float) -> float:
    """`first`, doubled `step` times, at most `cap` (step 0 is the first wait)."""
    if step <= 0:
        return min(first, cap)
    return min(cap, first * 2.0 ** min(step, 64))


def retry_delay(elapsed: float, policy: RetryPolicy, hint: float | None = None) -> float:
    """The wait after a fault, `elapsed` seconds into the streak: as long again, within bounds.

    At least `first_delay` and the backend's own `hint`, at most `max_delay`, and never
    past the deadline, so the last try happens at the deadline rather than after it.
    """
    delay = max(policy.first_delay, elapsed, hint or 0.0)
    delay = min(delay, max(policy.max_delay, hint or 0.0))
    return max(0.0, min(delay, policy.deadline - elapsed))


def decide(
    now: datetime,
    policy: RetryPolicy,
    since: datetime | None,
    same_kind: bool = True,
    hint: float | None = None,
) -> GiveBack | GiveUp:
    """What to do with an image after a backend fault at `now`.

    `since` is when the image's streak of faults began (None: this is the first);
    a fault of another kind than the streak's starts a new streak.
    """
    start = since if since is not None and same_kind and since <= now else now
    elapsed = (now - start).total_seconds()
    if elapsed >= policy.deadline:
        return GiveUp(start)
    return GiveBack(now + timedelta(seconds=retry_delay(elapsed, policy, hint)), start)
