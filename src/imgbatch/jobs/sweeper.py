"""Recovery sweep: finds work the queue lost, work given back whose delay ran out, and
requests a finalizer never finished.

Safe to run in many processes at once: every action is a conditional update that only
one sweeper can win, each batch of a few hundred rows is its own short transaction that
skips rows a worker holds (see `ledger.recovery`), and re-enqueued jobs are idempotent
claims.

Which pending images lost their job? The sweeper sends a mark through the queue
(`queue_marks`), behind every job waiting (`queue.fairness`: jobs enqueued later may pass
it, earlier ones cannot): once a worker takes the mark out, every job enqueued before
it has left the queue, and a pending image last enqueued before the mark was sent has
certainly lost its job. When the queue is empty, every image not enqueued in the last
`IMGBATCH_STALE_PENDING_SECONDS` has. Nothing else is re-enqueued, so however old a
backlog grows, it is never flooded with duplicates. The mark's round trip also measures
how fast the workers take jobs, which bounds how much one sweep re-enqueues.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from imgbatch import ledger
from imgbatch.context import Context
from imgbatch.errors import one_line
from imgbatch.ledger import MarkState, utcnow
from imgbatch.logs import OutageLog

from .lifecycle import finish_cancels
from .pipeline import finalize
from .removal import sweep_deletions

log = logging.getLogger(__name__)

# A request still not marked enqueued this long after its creation lost its enqueue
# (the API died between its commit and its enqueue); the next sweep enqueues it.
ENQUEUE_GRACE_SECONDS = 10.0
# A large upload written in chunks (`ledger.intake`) that wrote nothing for this long
# lost its API process: it is removed.
INTAKE_STALLED_SECONDS = 300.0
# Lost images re-enqueued by one sweep when the workers' pace is not measured yet.
REQUEUE_FLOOR = 2000


@dataclass(frozen=True)
class SweepReport:
    expired: int
    stale: int
    finalized: int
    cancels: int = 0  # accepted cancels finished for an API process that died mid-way
    unqueued: int = 0
    due: int = 0
    deleted: int = 0  # requests removed: stopped deletions and the retention period


@dataclass(frozen=True)
class LostJobPlan:
    """What one sweep does about lost jobs (`plan_lost_jobs`)."""

    horizon: datetime | None  # re-enqueue pending images last enqueued before this
    send_mark: bool  # send a new mark through the busy queue
    retire_mark: bool  # the queue emptied while the mark was in it: count it as out
    allowance: int  # at most this many images this sweep


def plan_lost_jobs(
    mark: MarkState,
    depth: int,
    now: datetime,
    *,
    margin: float,
    mark_lost_after: float,
    sweep_interval: float,
    images_per_job: int,
    floor: int = REQUEUE_FLOOR,
) -> LostJobPlan:
    """Decide, from the last mark and the queue's depth, which pending images lost their job.

    `margin`: a job taken out of the queue this recently may still be on its way to its
    claim. An empty queue holds nothing: everything enqueued before `now - margin` has
    left it (and a mark still unseen was taken or lost with the rest). A busy queue
    holds a mark: once it came out (`margin` ago), what was enqueued before it was sent
    has left the queue. A mark not seen after `mark_lost_after` seconds is sent again.
    """
    ago = timedelta(seconds=margin)
    horizon: datetime | None = None
    send = retire = False
    if depth == 0:
        horizon = now - ago
        retire = mark.sent_at is not None and mark.seen_at is None and mark.sent_at <= horizon
    elif mark.sent_at is None:
        send = True
    elif mark.seen_at is not None:
        if mark.seen_at <= now - ago:
            horizon, send = mark.sent_at, True
    elif mark.sent_at <= now - timedelta(seconds=mark_lost_after):
        send = True
    allowance = floor
    if mark.seen_at is not None and mark.sent_at is not None and mark.sent_depth:
        took = max((mark.seen_at - mark.sent_at).total_seconds(), 0.001)
        pace = mark.sent_depth / took * images_per_job  # images the workers take per second
        allowance = max(floor, math.ceil(2 * pace * sweep_interval))
    return LostJobPlan(horizon, send, retire, allowance)


def sweep_once(ctx: Context) -> SweepReport:
    """One pass: expired leases, unqueued requests, due retries, lost jobs, unfinished
    cancels, finalizations, stopped deletions and the retention period."""
    settings, db, queue = ctx.settings, ctx.db, ctx.queue
    queue.adopt_legacy()  # Redis: jobs an older release pushed to the pre-fairness list
    depth = queue.depth()  # before this sweep adds jobs of its own
    # Leases that ran out belong to dead workers: their jobs are gone for sure. A worker
    # died holding these, and one may be the image that killed it, so each goes alone: a
    # poison image cannot take its neighbours' attempts with it.
    expired = 0
    for ids in ledger.expired_lease_batches(db, settings.max_attempts):
        queue.enqueue(ids, images_per_job=1)
        expired += len(ids)
    # Requests whose upload committed but never enqueued (the API died in between).
    unqueued = 0
    grace = utcnow() - timedelta(seconds=ENQUEUE_GRACE_SECONDS)
    for request_id in ledger.unenqueued_requests(db, grace):
        for ids in ledger.requeue_request(db, request_id):
            queue.enqueue(ids)
            unqueued += len(ids)
        ledger.mark_enqueued(db, request_id)
    # Images a backend's fault gave back, whose delay has run out.
    due = 0
    for ids in ledger.requeue_due(db, limit=REQUEUE_FLOOR * 5):
        queue.enqueue(ids)
        due += len(ids)
    # Pending images whose job the queue cannot be holding any more.
    mark = ledger.read_mark(db)
    plan = plan_lost_jobs(
        mark,
        depth,
        utcnow(),
        margin=settings.stale_pending_seconds,
        mark_lost_after=settings.lost_job_seconds,
        sweep_interval=settings.sweep_interval,
        images_per_job=settings.images_per_job,
    )
    stale = 0
    if plan.horizon is not None:
        for ids in ledger.requeue_lost(db, plan.horizon, plan.allowance):
            queue.enqueue(ids)
            stale += len(ids)
    if plan.retire_mark:
        ledger.see_mark(db, mark.token)
    if plan.send_mark:
        token = ledger.send_mark(db, mark.token, queue.depth())
        if token is not None:
            queue.enqueue_mark(token)
    if expired or stale or unqueued or due:
        log.info(
            "sweeper re-enqueued %d expired, %d lost, %d never enqueued and %d due images",
            expired,
            stale,
            unqueued,
            due,
        )
    # Large uploads whose API process died while writing them: tombstoned here, their
    # rows removed by `sweep_deletions` like any deleted request's.
    quiet = utcnow() - timedelta(seconds=INTAKE_STALLED_SECONDS)
    for request_id in ledger.stalled_intakes(db, quiet):
        if ledger.abandon_request(db, request_id):
            log.warning(
                "an upload stopped while it was written; removing it",
                extra={"request_id": request_id},
            )
    cancels = finish_cancels(ctx)
    ledger.settle_followers(db)  # repeated URLs whose source ended outside a worker's record
    finalized = 0
    for request_id in ledger.unfinalized_request_ids(db):
        if finalize(ctx, request_id) is not None:
            finalized += 1
    deleted = sweep_deletions(ctx)
    ledger.expire_keys(db)  # idempotency keys past their 24 hours
    return SweepReport(expired, stale, finalized, cancels, unqueued, due, deleted)


def run_sweeper(ctx: Context, stop: threading.Event) -> None:
    """Sweep every `IMGBATCH_SWEEP_INTERVAL` seconds until `stop` is set; never dies on an error.

    A backend that is down fails every pass alike: logged once per outage, not per pass.
    """
    outage = OutageLog(log, "sweeper backend")
    while not stop.wait(ctx.settings.sweep_interval):
        try:
            sweep_once(ctx)
        except Exception as exc:
            if ledger.is_unavailable(exc) or type(exc).__module__.startswith(("redis", "peewee")):
                outage.down(
                    one_line(exc),
                    "sweeping again next interval",
                )
            else:
                log.exception("sweep failed; trying again next interval")
        else:
            outage.up()
