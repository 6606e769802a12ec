"""Database errors that are nobody's fault for long: deadlocks (retried) and outages (503).

PostgreSQL breaks a deadlock by aborting one of the transactions (SQLSTATE 40P01);
a serialization failure (40001) is the same kind of verdict. Both are retried here
a few times with a short random pause, so they never surface as a task error. An
unreachable database surfaces as `UNAVAILABLE`: the API answers 503 for it.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_RETRIED_STATES = {"40P01", "40001"}  # deadlock_detected, serialization_failure
DEADLOCK_TRIES = 5

# The database cannot be reached (refused, reset, timed out, pool exhausted): a backend's
# fault, answered `503 unavailable` by the API.
UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)


def is_deadlock(exc: BaseException) -> bool:
    """A transaction the database aborted to break a deadlock (or a serialization conflict)."""
    if not isinstance(exc, DBAPIError):
        return False
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return state in _RETRIED_STATES


def is_unavailable(exc: BaseException) -> bool:
    """The database is unreachable or refused the connection (not a bug, not a deadlock)."""
    return isinstance(exc, UNAVAILABLE) and not is_deadlock(exc)


def retry_deadlocks(fn: Callable[P, T]) -> Callable[P, T]:
    """Run a whole transaction again when the database aborted it to break a deadlock.

    Only for functions whose transaction is self-contained and safe to repeat (every
    ledger operation is a conditional update).
    """

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        for attempt in range(1, DEADLOCK_TRIES + 1):
            try:
                return fn(*args, **kwargs)
            except DBAPIError as exc:
                if not is_deadlock(exc) or attempt == DEADLOCK_TRIES:
                    raise
                log.warning("%s: deadlock, transaction retried (%d)", fn.__name__, attempt)
                time.sleep(random.uniform(0.01, 0.05) * attempt)
        raise AssertionError("unreachable")

    return run
