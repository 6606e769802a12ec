"""The truth: requests, products, images and webhook deliveries in SQL.

Holds: `models` (SQLAlchemy tables), `engine` (one engine per process, sessions, Alembic
`migrations/`), `intake` (writing an upload: one transaction, or chunks of a request kept invisible
until complete), `operations` (the conditional updates every state change goes through:
claim, renew, record, finalize, requeue), `lifecycle` (the changes users start:
cancel, retry), `removal` (deleting a request: tombstone, batches, retention), `history`
(keyset pages of requests, newest first), `idempotency` (upload keys, unique per caller)
and `statuses` (pure status rules).
May import: SQLAlchemy/Alembic, the pure core (`imgbatch.catalogue` for the row type),
`imgbatch.errors`/`imgbatch.config`. Never the queue, storage, fetching or anything above.
"""

from __future__ import annotations

from .clock import isoformat, utcnow
from .engine import Database, dispose_engines, upgrade
from .history import CURSOR_PATTERN, Listed, Page, decode_cursor, encode_cursor, list_requests
from .idempotency import IdempotencyRecord, KeyTaken, StoredKey, expire_keys, find_key
from .intake import (
    abandon_request,
    add_products,
    begin_request,
    create_request,
    open_request,
    owner_backlog,
    stalled_intakes,
)
from .lifecycle import (
    RetryOutcome,
    cancel_pending_images,
    cancelling_request_ids,
    has_pending_images,
    request_cancel,
    retry_request,
)
from .models import (
    IdempotencyKey,
    Image,
    Product,
    QueueMark,
    Request,
    WebhookAttempt,
    WebhookDelivery,
)
from .operations import (
    AUTO,
    ClaimedImage,
    ImageResult,
    Recorded,
    claim_images,
    finalize_request,
    image_counts,
    image_savings,
    last_image_change,
    record_results,
    release_claims,
    renew_leases,
    unfinalized_request_ids,
)
from .recovery import (
    SWEEP_BATCH,
    MarkState,
    Release,
    expired_lease_batches,
    fail_exhausted_leases,
    give_back,
    mark_enqueued,
    read_mark,
    requeue_due,
    requeue_expired_leases,
    requeue_lost,
    requeue_request,
    requeue_stale_pending,
    see_mark,
    send_mark,
    settle_followers,
    unenqueued_requests,
)
from .removal import (
    ImageBatch,
    delete_images,
    delete_request_rows,
    deleting_request_ids,
    expired_request_ids,
    image_batch,
    mark_deleted,
)
from .retries import GiveBack, GiveUp, RetryPolicy, backoff_delay, decide, retry_delay
from .transient import UNAVAILABLE, is_deadlock, is_unavailable, retry_deadlocks

__all__ = [
    "AUTO",
    "CURSOR_PATTERN",
    "SWEEP_BATCH",
    "UNAVAILABLE",
    "ClaimedImage",
    "Database",
    "GiveBack",
    "GiveUp",
    "IdempotencyKey",
    "IdempotencyRecord",
    "Image",
    "ImageBatch",
    "ImageResult",
    "KeyTaken",
    "Listed",
    "MarkState",
    "Page",
    "Product",
    "QueueMark",
    "Recorded",
    "Release",
    "Request",
    "RetryOutcome",
    "RetryPolicy",
    "StoredKey",
    "WebhookAttempt",
    "WebhookDelivery",
    "abandon_request",
    "add_products",
    "backoff_delay",
    "begin_request",
    "cancel_pending_images",
    "cancelling_request_ids",
    "claim_images",
    "create_request",
    "decide",
    "decode_cursor",
    "delete_images",
    "delete_request_rows",
    "deleting_request_ids",
    "dispose_engines",
    "encode_cursor",
    "expire_keys",
    "expired_lease_batches",
    "expired_request_ids",
    "fail_exhausted_leases",
    "finalize_request",
    "find_key",
    "give_back",
    "has_pending_images",
    "image_batch",
    "image_counts",
    "image_savings",
    "is_deadlock",
    "is_unavailable",
    "isoformat",
    "last_image_change",
    "list_requests",
    "mark_deleted",
    "mark_enqueued",
    "open_request",
    "owner_backlog",
    "read_mark",
    "record_results",
    "release_claims",
    "renew_leases",
    "request_cancel",
    "requeue_due",
    "requeue_expired_leases",
    "requeue_lost",
    "requeue_request",
    "requeue_stale_pending",
    "retry_deadlocks",
    "retry_delay",
    "retry_request",
    "see_mark",
    "send_mark",
    "settle_followers",
    "stalled_intakes",
    "unenqueued_requests",
    "unfinalized_request_ids",
    "upgrade",
    "utcnow",
]
