"""Deleting requests, by a user or by the retention period: objects first, then rows.

`delete` tombstones a final request (one conditional update: every route answers 404 from
then on) and removes it batch by batch — each batch's stored objects, then its image rows
— until a time budget runs out; the API runs the rest after answering, and the sweeper
finishes any removal that stopped (a crash, a storage outage). Objects no row names (an
attempt whose result was dropped) go by prefix at the end. The sweeper also applies
`IMGBATCH_RETENTION_DAYS` the same way, a bounded number of requests per pass.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from imgbatch import ledger
from imgbatch.context import Context
from imgbatch.errors import ApiError

log = logging.getLogger(__name__)

DELETE_BUDGET = 0.5  # seconds of removal before the API answers
BACKGROUND_BUDGET = 300.0
SWEEP_BUDGET = 5.0  # seconds of removal per sweeper pass (it has other duties)
RESUME_AFTER = timedelta(seconds=60)  # a tombstone this old has no remover working on it
EXPIRED_PER_PASS = 20


def delete(ctx: Context, request_id: str, budget: float = DELETE_BUDGET) -> bool:
    """Delete a final request; True when it is entirely gone within `budget`.

    404 when unknown, 409 `not_finished` while it runs (cancel it first). A request whose
    deletion was accepted before and stopped half-way is taken up again. Once the request
    is marked deleted, an error while removing it (a storage outage) is logged and returns
    False: the caller (or the sweeper) goes on later.
    """
    outcome = ledger.mark_deleted(ctx.db, request_id)
    if outcome == "not_found":
        raise ApiError(404, "not_found", "no such request")
    if outcome == "not_finished":
        raise ApiError(
            409, "not_finished", "the request is still running; cancel it first, then delete it"
        )
    log.info("delete accepted", extra={"request_id": request_id})
    try:
        return purge(ctx, request_id, budget)
    except Exception:  # the tombstone is written: the rest is finished later
        log.exception("deletion stopped; it goes on later", extra={"request_id": request_id})
        return False


def purge(ctx: Context, request_id: str, budget: float = BACKGROUND_BUDGET) -> bool:
    """Remove a tombstoned request's objects and rows; False when `budget` ran out first.

    A storage or database error propagates: nothing is lost, the next call goes on.
    """
    deadline = time.monotonic() + budget
    objects = 0
    while True:
        batch = ledger.image_batch(ctx.db, request_id)
        if not batch.ids:
            break
        ctx.storage.delete_many(batch.keys)  # the objects first ...
        ledger.delete_images(ctx.db, batch.ids)  # ... then the rows that named them
        objects += len(batch.keys)
        if time.monotonic() >= deadline:
            log.info(
                "deletion continues later: %d objects removed so far",
                objects,
                extra={"request_id": request_id},
            )
            return False
    leftovers = ctx.storage.list_keys(f"{request_id}/")
    if leftovers:
        ctx.storage.delete_many(leftovers)
    ledger.delete_request_rows(ctx.db, request_id)
    log.info(
        "request deleted: %d objects", objects + len(leftovers), extra={"request_id": request_id}
    )
    return True


def purge_quietly(ctx: Context, request_id: str) -> None:
    """`purge` for a background task: an error is logged and left to the sweeper."""
    try:
        purge(ctx, request_id)
    except Exception:
        log.exception(
            "deletion stopped; the sweeper will finish it", extra={"request_id": request_id}
        )


def sweep_deletions(ctx: Context, budget: float | None = None) -> int:
    """For the sweeper: finish stopped deletions, then apply the retention period, one
    request at a time while `budget` (`SWEEP_BUDGET`) lasts. Returns the requests entirely
    removed.
    """
    deadline = time.monotonic() + (SWEEP_BUDGET if budget is None else budget)
    removed = 0
    stopped = ledger.deleting_request_ids(ctx.db, ledger.utcnow() - RESUME_AFTER)
    for request_id in stopped:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return removed
        removed += purge(ctx, request_id, remaining)
    days = ctx.settings.retention_days
    if days <= 0:
        return removed
    cutoff = ledger.utcnow() - timedelta(days=days)
    for request_id in ledger.expired_request_ids(ctx.db, cutoff, EXPIRED_PER_PASS):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if ledger.mark_deleted(ctx.db, request_id) != "marked":
            continue  # another sweeper (or a retry, or a user's delete) won it
        log.info("retention: deleting the request", extra={"request_id": request_id})
        removed += purge(ctx, request_id, remaining)
    return removed
