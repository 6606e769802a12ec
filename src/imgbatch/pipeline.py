"""Processing one image: claim → fetch → compress → store → record → maybe finalize.

Every step is safe to repeat: the claim is a conditional update, the output key
is deterministic (a retry overwrites its own object), and recording requires
the current claim.
"""

from __future__ import annotations

import logging
import time

from . import imaging, ledger, metrics
from .context import Context
from .errors import ImageFailure
from .ledger import ClaimedImage
from .models import Request
from .webhooks import create_completion_delivery

log = logging.getLogger(__name__)


def output_key(claimed: ClaimedImage, extension: str) -> str:
    """Deterministic object key: request / serial number / position + extension."""
    return f"{claimed.request_id}/{claimed.serial_number}/{claimed.position}.{extension}"


def process_image(ctx: Context, image_id: int) -> str | None:
    """Run one image job; returns the image's new status, or None when the job was a no-op."""
    lease = ctx.settings.lease_seconds
    claimed = ledger.claim_image(ctx.db, image_id, lease, ctx.settings.max_attempts)
    if claimed is None:
        return None
    started = time.perf_counter()
    extra = {"request_id": claimed.request_id, "image_id": claimed.id}
    code: str | None
    message: str | None
    try:
        fetched = ctx.fetcher.fetch(claimed.input_url)
        # A slow download ate into the lease: extend it before compressing.
        slow = time.perf_counter() - started > lease / 4
        if slow and not ledger.renew_lease(ctx.db, claimed, lease):
            log.warning("lease lost while fetching; another worker has the image", extra=extra)
            return None
        options = imaging.CompressOptions(
            quality=claimed.quality,
            format=claimed.output_format,
            max_pixels=ctx.settings.max_pixels,
        )
        try:
            result = imaging.compress(fetched.data, options)
        except MemoryError:
            # The worker's RLIMIT_AS (IMGBATCH_WORKER_MAX_RSS_MB) stopped the decode.
            raise ImageFailure(
                "too_many_pixels",
                "decoding this image needs more memory than a worker may use "
                f"({ctx.settings.worker_max_rss_mb} MB)",
            ) from None
        key = output_key(claimed, result.extension)
        try:
            ctx.storage.put(key, result.data, result.content_type)
        except Exception as exc:
            raise ImageFailure("storage", f"could not store the image: {exc}") from exc
    except ImageFailure as failure:
        code, message = failure.code, failure.message
        log.info("image failed: %s: %s", code, message, extra=extra)
    except Exception as exc:  # a bug must fail one image, not the worker
        log.exception("image crashed", extra=extra)
        code, message = "internal", f"{type(exc).__name__}: {exc}"
    else:
        code = message = None
    seconds = time.perf_counter() - started
    if code is not None:
        recorded = ledger.record_failed(ctx.db, claimed, code, message or code)
        status = "failed"
    else:
        recorded = ledger.record_done(
            ctx.db,
            claimed,
            output_key=key,
            output_url=ctx.output_url(key),
            output_format=result.format,
            bytes_in=result.bytes_in,
            bytes_out=result.bytes_out,
            width=result.width,
            height=result.height,
            kept_original=result.kept_original,
        )
        status = "done"
    if not recorded.ours:
        # Our lease ran out and another worker took the image: its result counts, not ours.
        log.warning("lease lost before recording; result dropped", extra=extra)
        return None
    metrics.image_processed(status, code, seconds)
    if recorded.maybe_last:
        finalize(ctx, claimed.request_id)
    return status


def finalize(ctx: Context, request_id: str) -> str | None:
    """Finalize the request if this was its last image; the winner creates the webhook delivery."""

    def on_finalized(session: object, request: Request) -> None:
        create_completion_delivery(session, request, ctx.settings)  # type: ignore[arg-type]

    final = ledger.finalize_request(ctx.db, request_id, on_finalized=on_finalized)
    if final is not None:
        metrics.request_finished(final)
        log.info("request finished: %s", final, extra={"request_id": request_id})
    return final
