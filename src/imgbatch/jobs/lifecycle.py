"""Cancel and retry as services: the ledger decides, this module finishes the work.

The API answers within a second whatever the request's size: `cancel` accepts the cancel
(one conditional update) and cancels pending images in batches until a time budget runs
out; `finish_cancel` does the rest (the API runs it after answering, and the sweeper runs
it for a cancel whose API process died). Retry enqueues the images it put back only after
their transaction committed, as an upload does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from imgbatch import ledger
from imgbatch.context import Context
from imgbatch.errors import ApiError

from .pipeline import finalize

log = logging.getLogger(__name__)

CANCEL_BUDGET = 0.5  # seconds of batched cancelling before the API answers
BACKGROUND_BUDGET = 300.0  # seconds a background finisher works before leaving it to a sweeper
LOCKED_WAIT = 0.05  # pending rows a claim holds right now: look again after this


def cancel(ctx: Context, request_id: str, budget: float = CANCEL_BUDGET) -> bool:
    """Cancel a request: True when every pending image was cancelled within `budget`.

    409 `already_finished` when the request is final or another cancel won. Whoever
    cancels its last pending image finalizes it (unless images are still in flight: the
    worker that records the last one finalizes it).
    """
    if not ledger.request_cancel(ctx.db, request_id):
        raise ApiError(409, "already_finished", "the request is finished or already cancelled")
    log.info("cancel accepted", extra={"request_id": request_id})
    return finish_cancel(ctx, request_id, budget)


def finish_cancel(ctx: Context, request_id: str, budget: float = BACKGROUND_BUDGET) -> bool:
    """Cancel the request's pending images in batches, then try to finalize it.

    Returns False when `budget` ran out first (call again; nothing is lost either way).
    """
    deadline = time.monotonic() + budget
    cancelled = 0
    while True:
        count = ledger.cancel_pending_images(ctx.db, request_id)
        cancelled += count
        if count == 0:
            if not ledger.has_pending_images(ctx.db, request_id):
                break
            time.sleep(LOCKED_WAIT)  # a claim holds the rest: it wins them, or they come back
        if time.monotonic() >= deadline:
            log.info(
                "cancel continues in the background: %d images cancelled so far",
                cancelled,
                extra={"request_id": request_id},
            )
            return False
    final = finalize(ctx, request_id)
    log.info(
        "cancelled %d pending images%s",
        cancelled,
        "" if final else "; images in flight finish first",
        extra={"request_id": request_id},
    )
    return True


def finish_cancels(ctx: Context, budget: float = 10.0) -> int:
    """For the sweeper: finish accepted cancels that still have pending images."""
    finished = 0
    deadline = time.monotonic() + budget
    for request_id in ledger.cancelling_request_ids(ctx.db):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if finish_cancel(ctx, request_id, remaining):
            finished += 1
    return finished


def retry(ctx: Context, request_id: str, codes: Sequence[str] | None = None) -> int:
    """Put a final request's failed (and cancelled) images back to work; how many.

    409 `not_finished` while it is not final, `nothing_to_retry` when no image matches.
    """
    outcome = ledger.retry_request(ctx.db, request_id, codes)
    if outcome.code == "not_found":
        raise ApiError(404, "not_found", "no such request")
    if outcome.code == "not_finished":
        raise ApiError(
            409, "not_finished", "the request is not finished; cancel it or wait for it first"
        )
    if outcome.code == "nothing_to_retry":
        which = f" with code {', '.join(codes)}" if codes else ""
        raise ApiError(409, "nothing_to_retry", f"no failed or cancelled image{which} to retry")
    try:
        ctx.queue.enqueue(outcome.image_ids)
        ledger.mark_enqueued(ctx.db, request_id)
    except Exception:
        # The images are pending and the request not marked enqueued: the next sweep
        # enqueues them.
        log.exception("enqueue failed; the sweeper will retry", extra={"request_id": request_id})
    log.info("retrying %d images", len(outcome.image_ids), extra={"request_id": request_id})
    return len(outcome.image_ids)
