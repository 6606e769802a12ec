"""Giving a job's images back after a backend's fault, with back-off, for a bounded time.

The decision per image is `ledger.retries.decide` (pure): released with a delay that
doubles while the backend stays down, or, once the image's streak of faults is older
than `IMGBATCH_<KIND>_RETRY_SECONDS`, failed with the backend as its code and the last
error as its message. The release does not count as an attempt. The fault is counted
in /metrics, logged at WARNING once per outage (see `gate`), and closes this process's
gate when every job needs that backend.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from imgbatch import ledger
from imgbatch.context import Context
from imgbatch.errors import BackendFault
from imgbatch.ledger import ClaimedImage, GiveUp, Release, RetryPolicy, utcnow

from .gate import process_gate

log = logging.getLogger(__name__)


def retry_policy(ctx: Context, kind: str) -> RetryPolicy:
    settings = ctx.settings
    return RetryPolicy(
        first_delay=settings.retry_delay_seconds,
        max_delay=settings.retry_max_delay_seconds,
        deadline=settings.retry_deadline(kind),
    )


def give_back(ctx: Context, faulted: Sequence[tuple[ClaimedImage, BackendFault]]) -> set[int]:
    """Release the images, or fail those past their deadline; returns the ids to fail.

    The caller records the returned ones as failed (their result already carries the
    backend as code and the last error as message).
    """
    now = utcnow()
    releases: list[Release] = []
    give_up: set[int] = set()
    for claimed, fault in faulted:
        decision = ledger.decide(
            now,
            retry_policy(ctx, fault.kind),
            claimed.fault_since,
            same_kind=claimed.fault_kind in (None, fault.kind),
            hint=fault.delay,
        )
        if isinstance(decision, GiveUp):
            give_up.add(claimed.id)
            log.warning(
                "image failed: %s unavailable for %.0f s: %s",
                fault.kind,
                (now - decision.since).total_seconds(),
                fault.detail,
                extra={"request_id": claimed.request_id, "image_id": claimed.id},
            )
        else:
            releases.append(
                Release(claimed, fault.kind, fault.message, decision.retry_at, decision.since)
            )
    if releases:
        ledger.give_back(ctx.db, releases)
    gate = process_gate()
    for kind in dict.fromkeys(fault.kind for _, fault in faulted):
        given = sum(1 for r in releases if r.kind == kind)
        first = next(f for _, f in faulted if f.kind == kind)
        gate.fault(kind, first.detail, ctx.settings, given_back=given)
    return give_up
