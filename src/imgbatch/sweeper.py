"""Recovery sweep: finds work the queue lost and requests a finalizer never finished.

Safe to run in many processes at once: every action is a conditional update
that only one sweeper can win, and re-enqueued jobs are idempotent claims.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from . import ledger
from .context import Context
from .models import utcnow
from .pipeline import finalize

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # an image whose worker died this many times is failed, not retried forever


@dataclass(frozen=True)
class SweepReport:
    expired: int
    stale: int
    finalized: int


def sweep_once(ctx: Context) -> SweepReport:
    expired = ledger.requeue_expired_leases(ctx.db, MAX_ATTEMPTS)
    cutoff = utcnow() - timedelta(seconds=ctx.settings.stale_pending_seconds)
    stale = ledger.requeue_stale_pending(ctx.db, cutoff)
    if expired or stale:
        ctx.queue.enqueue(expired + stale)
        log.info("sweeper re-enqueued %d expired and %d stale images", len(expired), len(stale))
    finalized = 0
    for request_id in ledger.unfinalized_request_ids(ctx.db):
        if finalize(ctx, request_id) is not None:
            finalized += 1
    # Images failed for too many attempts may have completed a request too.
    return SweepReport(len(expired), len(stale), finalized)


def run_sweeper(ctx: Context, stop: threading.Event) -> None:
    """Sweep every `IMGBATCH_SWEEP_INTERVAL` seconds until `stop` is set; never dies on an error."""
    while not stop.wait(ctx.settings.sweep_interval):
        try:
            sweep_once(ctx)
        except Exception:
            log.exception("sweep failed; trying again next interval")
