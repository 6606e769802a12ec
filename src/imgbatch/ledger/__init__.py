"""The truth: requests, products, images and webhook deliveries in SQL.

Holds: `models` (SQLAlchemy tables), `engine` (one engine per process, sessions, Alembic
`migrations/`), `operations` (the conditional updates every state change goes through:
create, claim, renew, record, finalize, requeue), `lifecycle` (the changes users start:
cancel, retry) and `statuses` (pure status rules).
May import: SQLAlchemy/Alembic, the pure core (`imgbatch.catalogue` for the row type),
`imgbatch.errors`/`imgbatch.config`. Never the queue, storage, fetching or anything above.
"""

from __future__ import annotations

from .clock import isoformat, utcnow
from .engine import Database, dispose_engines, upgrade
from .lifecycle import (
    RetryOutcome,
    cancel_pending_images,
    cancelling_request_ids,
    has_pending_images,
    request_cancel,
    retry_request,
)
from .models import Image, Product, Request, WebhookAttempt, WebhookDelivery
from .operations import (
    AUTO,
    ClaimedImage,
    ImageResult,
    Recorded,
    claim_images,
    create_request,
    finalize_request,
    image_counts,
    image_savings,
    last_image_change,
    record_results,
    renew_leases,
    requeue_expired_leases,
    requeue_stale_pending,
    unfinalized_request_ids,
)

__all__ = [
    "AUTO",
    "ClaimedImage",
    "Database",
    "Image",
    "ImageResult",
    "Product",
    "Recorded",
    "Request",
    "RetryOutcome",
    "WebhookAttempt",
    "WebhookDelivery",
    "cancel_pending_images",
    "cancelling_request_ids",
    "claim_images",
    "create_request",
    "dispose_engines",
    "finalize_request",
    "has_pending_images",
    "image_counts",
    "image_savings",
    "isoformat",
    "last_image_change",
    "record_results",
    "renew_leases",
    "request_cancel",
    "requeue_expired_leases",
    "requeue_stale_pending",
    "retry_request",
    "unfinalized_request_ids",
    "upgrade",
    "utcnow",
]
