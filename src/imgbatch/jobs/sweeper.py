"""Recovery sweep: finds work the queue lost and requests a finalizer never finished.

Safe to run in many processes at once: every action is a conditional update
that only one sweeper can win, and re-enqueued jobs are idempotent claims.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from imgbatch import ledger
from imgbatch.context import Context
from imgbatch.ledger import utcnow

from .lifecycle import finish_cancels
from .pipeline import finalize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepReport:
    expired: int
    stale: int
    finalized: int
    cancels: int = 0  # accepted cancels finished for an API process that died mid-way


def sweep_once(ctx: Context) -> SweepReport:
    """One pass: expired leases, lost jobs, unfinished cancels, stuck finalizations."""
    # Leases that ran out belong to dead workers: their jobs are gone for sure.
    # (Images out of attempts are failed here instead, which may finish a request.)
    expired = ledger.requeue_expired_leases(ctx.db, ctx.settings.max_attempts)
    # A pending image may just be waiting in a long queue. When the queue is empty, one
    # not enqueued for `stale_pending_seconds` is certainly lost (an enqueue failed, or a
    # queue dropped it); while the queue is busy, only after `lost_job_seconds`, so a
    # backlog is not flooded with duplicates and a lost job still comes back under load.
    busy = ctx.queue.depth() > 0
    age = ctx.settings.lost_job_seconds if busy else ctx.settings.stale_pending_seconds
    stale = ledger.requeue_stale_pending(ctx.db, utcnow() - timedelta(seconds=age))
    if expired:
        # A worker died holding these: one may be the image that killed it, so each goes
        # alone, and a poison image cannot take its neighbours' attempts with it.
        ctx.queue.enqueue(sorted(expired), images_per_job=1)
    if stale:
        ctx.queue.enqueue(sorted(stale))
    if expired or stale:
        log.info("sweeper re-enqueued %d expired and %d stale images", len(expired), len(stale))
    cancels = finish_cancels(ctx)
    finalized = 0
    for request_id in ledger.unfinalized_request_ids(ctx.db):
        if finalize(ctx, request_id) is not None:
            finalized += 1
    return SweepReport(len(expired), len(stale), finalized, cancels)


def run_sweeper(ctx: Context, stop: threading.Event) -> None:
    """Sweep every `IMGBATCH_SWEEP_INTERVAL` seconds until `stop` is set; never dies on an error."""
    while not stop.wait(ctx.settings.sweep_interval):
        try:
            sweep_once(ctx)
        except Exception:
            log.exception("sweep failed; trying again next interval")
