"""Processing a job's images: claim all → fetch and compress each → store all → record all
→ maybe finalize.

A job carries a few image ids (see `queue.job_batches`): claiming, storing and
recording them together costs one transaction and one pass of fsyncs per job
instead of per image, which was a third of a worker's busy time on 0.5 MP images
(py-spy).
Every step is safe to repeat: the claim is a conditional update, the output key
is deterministic (a retry overwrites its own object), and recording requires
the current claim.

A backend's fault (`errors.BackendFault`: the store is down, an image host cools
down) is not the image's: its images go back to the queue with a delay (see
`giveback`) and this process pauses taking jobs (see `gate`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from imgbatch import imaging, ledger, metrics
from imgbatch.context import Context
from imgbatch.errors import BackendFault, ImageFailure, first_line
from imgbatch.ledger import ClaimedImage, ImageResult, Request
from imgbatch.ledger import statuses as st
from imgbatch.storage import PutObject
from imgbatch.webhooks import create_completion_delivery

from . import budget
from .gate import process_gate
from .giveback import give_back

log = logging.getLogger(__name__)


def output_key(claimed: ClaimedImage, extension: str) -> str:
    """Deterministic object key: request / serial number / position + extension."""
    return f"{claimed.request_id}/{claimed.serial_number}/{claimed.position}.{extension}"


# What clients read for failures that are the server's: never paths, hosts or exception text.
INTERNAL_MESSAGE = "internal error while processing the image; the operator has the details"
STORAGE_MESSAGE = "could not store the image; the operator has the details"

# Compressed images wait in memory to be stored together, up to this many bytes.
STORE_AFTER_BYTES = 32 * 1024 * 1024


@dataclass
class _Outcome:
    """One image of the job on its way to the ledger."""

    claimed: ClaimedImage
    result: ImageResult
    seconds: float
    stored: PutObject | None = None  # the compressed bytes, until they are stored
    fault: BackendFault | None = None  # a backend failed it: given back, not recorded


class _Leases:
    """The job's claims, renewed before they could run out under a slow batch."""

    def __init__(self, ctx: Context, claimed: list[ClaimedImage]) -> None:
        self.ctx = ctx
        self.seconds = ctx.settings.lease_seconds
        self.claimed = claimed
        self.held = {image.id for image in claimed}
        self._renewed = time.monotonic()
        self._lock = threading.Lock()  # the guard thread keeps them too (`budget`)

    def drop(self, image_ids: Sequence[int]) -> None:
        """Claims given back: this job must not work on them any more."""
        with self._lock:
            self.held.difference_update(image_ids)

    def keep(self) -> None:
        """Renew every claim still held (until recorded) when a quarter of the lease is gone."""
        with self._lock:
            if time.monotonic() - self._renewed < self.seconds / 4:
                return
            mine = [image for image in self.claimed if image.id in self.held]
            kept = {image.id for image in ledger.renew_leases(self.ctx.db, mine, self.seconds)}
            for image in mine:
                if image.id not in kept:
                    self.held.discard(image.id)
                    log.warning(
                        "lease lost; another worker has the image",
                        extra={"request_id": image.request_id, "image_id": image.id},
                    )
            self._renewed = time.monotonic()


def process_images(ctx: Context, image_ids: Sequence[int]) -> list[str]:
    """Run one job; returns the new status of each image it recorded (none for a no-op)."""
    settings = ctx.settings
    try:
        claimed = ledger.claim_images(
            ctx.db, image_ids, settings.lease_seconds, settings.max_attempts
        )
    except ledger.UNAVAILABLE as exc:
        _database_down(ctx, image_ids, exc)
        return []
    process_gate().ok("database")
    try:
        return _run(ctx, claimed)
    except ledger.UNAVAILABLE as exc:
        # The ledger went away after the claim: nothing can be recorded or released now.
        # The claimed images come back when their leases run out (the sweeper); this
        # process pauses instead of failing the next jobs at full speed.
        process_gate().fault("database", first_line(exc), ctx.settings)
        return []


def _run(ctx: Context, claimed: list[ClaimedImage]) -> list[str]:
    """Fetch, compress, store and record the claimed images of one job."""
    leases = _Leases(ctx, claimed)
    guard = _guard(ctx)
    with guard.job(leases):  # leases kept, and each image held to its CPU budget
        outcomes: list[_Outcome] = []
        held_bytes = 0
        for image in claimed:
            leases.keep()
            if image.id not in leases.held:
                continue
            down = next((o for o in outcomes if o.fault and o.fault.kind == "storage"), None)
            if down is not None:  # the store is down: the rest of the job goes back untouched
                outcomes.append(_Outcome(image, down.result, 0.0, fault=down.fault))
                continue
            with guard.image(image):
                outcome = _process(ctx, image, leases)
            if outcome is not None and image.id in leases.held:
                outcomes.append(outcome)
                held_bytes += len(outcome.stored.data) if outcome.stored else 0
            if held_bytes > STORE_AFTER_BYTES:  # large images: bound what the job holds
                _store(ctx, outcomes)
                held_bytes = 0
        leases.keep()
        outcomes = [o for o in outcomes if o.claimed.id in leases.held]
        _store(ctx, outcomes)
    return _record(ctx, outcomes)  # recording ends the claims: no lease to keep


def _guard(ctx: Context) -> budget.ImageGuard:
    settings = ctx.settings

    def condemn(image: ClaimedImage, used: float, leases: budget.Leases) -> None:
        _condemn(ctx, image, used, cast(_Leases, leases))

    return budget.for_process(
        settings.max_image_seconds, condemn, end_process=settings.worker_type == "process"
    )


def _condemn(ctx: Context, image: ClaimedImage, used: float, leases: _Leases) -> None:
    """An image over its CPU budget: failed `too_complex`; the job's other images go back.

    Runs in the guard thread while the main thread is still inside the decoder; every
    write is conditional on our claim, so whichever thread writes second is refused.
    """
    limit = ctx.settings.max_image_seconds
    result = ImageResult.failed(
        "too_complex",
        f"processing this image took more than {limit:g} s of CPU "
        "(IMGBATCH_MAX_IMAGE_SECONDS); it was stopped",
    )
    (recorded,) = ledger.record_results(ctx.db, [(image, result)])
    if recorded.ours:
        metrics.image_processed(result.status, result.error_code, used)
    others = [c for c in leases.claimed if c.id != image.id and c.id in leases.held]
    leases.drop([image.id, *(c.id for c in others)])
    released = ledger.release_claims(ctx.db, others)
    if released:
        try:
            ctx.queue.enqueue(released)
        except Exception:  # pending and enqueued "now": the sweeper finds them if lost
            log.warning("could not enqueue the images given back", exc_info=True)
    if recorded.maybe_last:
        finalize(ctx, image.request_id)


def _process(ctx: Context, claimed: ClaimedImage, leases: _Leases) -> _Outcome | None:
    """Fetch and compress one image; a failure becomes its result, never an exception.

    None when the claim was lost during the download. A ledger error while renewing
    leases is not the image's fault: it propagates, and the sweeper retries the job's
    images once their leases run out.
    """
    started = time.perf_counter()
    try:
        fetched = ctx.fetcher.fetch(claimed.input_url)
    except Exception as exc:
        return _failed(claimed, exc, started)
    leases.keep()  # a slow download eats into the lease: renew before compressing
    if claimed.id not in leases.held:
        return None
    try:
        return _compress(ctx, claimed, fetched.data, started)
    except Exception as exc:
        return _failed(claimed, exc, started)


def _failed(claimed: ClaimedImage, exc: Exception, started: float) -> _Outcome:
    extra = {"request_id": claimed.request_id, "image_id": claimed.id}
    if isinstance(exc, BackendFault):  # not the image's fault: it goes back (`giveback`)
        result = ImageResult.failed(exc.code, exc.message)
        return _Outcome(claimed, result, time.perf_counter() - started, fault=exc)
    if isinstance(exc, ImageFailure):
        cause = exc.__cause__ if exc.code == "internal" else None  # e.g. the encoder's words
        level = logging.INFO if cause is None else logging.WARNING
        log.log(level, "image failed: %s: %s", exc.code, exc.message, exc_info=cause, extra=extra)
        result = ImageResult.failed(exc.code, exc.message)
    else:  # a bug must fail one image, not the worker
        log.error("image crashed", exc_info=exc, extra=extra)
        result = ImageResult.failed("internal", INTERNAL_MESSAGE)
    return _Outcome(claimed, result, time.perf_counter() - started)


def _compress(ctx: Context, claimed: ClaimedImage, data: bytes, started: float) -> _Outcome:
    """Compress downloaded bytes into the image's result and the object to store."""
    options = imaging.CompressOptions(
        quality=claimed.quality,
        format=claimed.output_format,
        max_width=claimed.max_width,
        max_height=claimed.max_height,
        max_pixels=ctx.settings.max_pixels,
        auto_target=ctx.settings.auto_quality_target,
        jpeg_fast_path=ctx.settings.jpeg_fast_path,
    )
    try:
        result = imaging.compress(data, options)
    except MemoryError:
        # The worker's RLIMIT_AS (IMGBATCH_WORKER_MAX_RSS_MB) stopped the decode.
        raise ImageFailure(
            "too_many_pixels",
            "decoding this image needs more memory than a worker may use "
            f"({ctx.settings.worker_max_rss_mb} MB)",
        ) from None
    key = output_key(claimed, result.extension)
    done = ImageResult(
        status=st.DONE,
        output_key=key,
        output_url=ctx.output_url(key),
        output_format=result.format,
        bytes_in=result.bytes_in,
        bytes_out=result.bytes_out,
        width=result.width,
        height=result.height,
        kept_original=result.kept_original,
        quality=result.quality,
    )
    stored = PutObject(key, result.data, result.content_type)
    return _Outcome(claimed, done, time.perf_counter() - started, stored)


def _store(ctx: Context, outcomes: list[_Outcome]) -> None:
    """Store the compressed images not stored yet.

    A failed write is the store's fault, never the image's: the image goes back to the
    queue (connection errors, timeouts, 5xx, throttling, a missing bucket, a full disk).
    """
    pending = [o for o in outcomes if o.stored is not None]
    if not pending:
        return
    started = time.perf_counter()
    try:
        errors: list[Exception | None] = list(
            ctx.storage.put_many([o.stored for o in pending if o.stored is not None])
        )
    except Exception as exc:  # the store is down: every image of the batch alike
        errors = [exc] * len(pending)
    share = (time.perf_counter() - started) / len(pending)
    for outcome, error in zip(pending, errors, strict=True):
        outcome.stored = None  # the bytes are no longer needed: free them
        outcome.seconds += share
        if error is not None:
            # The error names server paths or the bucket's endpoint: the log gets it
            # (`detail`), clients (status document, output CSV) a message of their own.
            outcome.result = ImageResult.failed("storage", STORAGE_MESSAGE)
            outcome.fault = BackendFault("storage", STORAGE_MESSAGE, detail=str(error))
    if not any(error is not None for error in errors):
        process_gate().ok("storage")


def _record(ctx: Context, outcomes: list[_Outcome]) -> list[str]:
    """Record the job's results in one transaction, then finalize requests it may have ended.

    Images a backend's fault gave back are released instead (or, past the bounded
    retry time, recorded as failed with the last error).
    """
    faulted = [o for o in outcomes if o.fault is not None]
    given_back: list[str] = []
    if faulted:
        failed_for_good = give_back(ctx, [(o.claimed, o.fault) for o in faulted if o.fault])
        for outcome in faulted:
            if outcome.claimed.id in failed_for_good:
                outcome.fault = None  # recorded below as failed, with the last error
            else:
                given_back.append(st.PENDING)
        outcomes = [o for o in outcomes if o.fault is None]
    if not outcomes:
        return given_back
    recorded = ledger.record_results(ctx.db, [(o.claimed, o.result) for o in outcomes])
    statuses: list[str] = []
    last: dict[str, None] = {}
    for outcome, rec in zip(outcomes, recorded, strict=True):
        if not rec.ours:
            # Our lease ran out and another worker took the image: its result counts, not ours.
            log.warning(
                "lease lost before recording; result dropped",
                extra={"request_id": outcome.claimed.request_id, "image_id": outcome.claimed.id},
            )
            continue
        metrics.image_processed(outcome.result.status, outcome.result.error_code, outcome.seconds)
        metrics.images_repeated(outcome.result.status, outcome.claimed.followers)
        statuses.append(outcome.result.status)
        if rec.maybe_last:
            last[outcome.claimed.request_id] = None
    for request_id in last:
        finalize(ctx, request_id)
    return statuses + given_back


def _database_down(ctx: Context, image_ids: Sequence[int], exc: Exception) -> None:
    """The claim could not reach the ledger: put the job back in the queue and pause.

    Nothing was claimed, so the job is whole; if the queue refuses it too, the sweeper
    finds its images again (they are pending and their job has left the queue).
    """
    process_gate().fault("database", first_line(exc), ctx.settings)
    try:
        ctx.queue.enqueue_job(list(image_ids))
    except Exception as again:
        log.warning("could not put a job back in the queue: %s", first_line(again))


def finalize(ctx: Context, request_id: str) -> str | None:
    """Finalize the request if this was its last image; the winner creates the webhook delivery."""

    def on_finalized(session: object, request: Request) -> None:
        create_completion_delivery(session, request, ctx.settings)  # type: ignore[arg-type]

    final = ledger.finalize_request(ctx.db, request_id, on_finalized=on_finalized)
    if final is not None:
        metrics.request_finished(final)
        log.info("request finished: %s", final, extra={"request_id": request_id})
    return final
