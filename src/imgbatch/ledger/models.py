"""The ledger: SQLAlchemy models for requests, products, images and webhook deliveries.

The ledger is the truth and the queue is a hint: every image is a row whose
status moves pending → processing → done | failed by conditional updates, so
a duplicate or lost job can never corrupt it (see `operations`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .clock import utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Request(Base):
    """One uploaded CSV. `status` is stored because finalization is a conditional update on it."""

    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    owner: Mapped[str | None] = mapped_column(String(64), index=True)  # sha256 of the API key
    quality: Mapped[int] = mapped_column(Integer, default=50)  # ignored when auto_quality
    auto_quality: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    output_format: Mapped[str] = mapped_column(String(8), default="keep")
    max_width: Mapped[int | None] = mapped_column(Integer)  # the box to fit inside, if any
    max_height: Mapped[int | None] = mapped_column(Integer)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # Open mode: the secret that signs this upload's own webhook_url (returned once, in the
    # upload's 202). With API keys the key's secret signs it (`WebhookSecret`).
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    product_count: Mapped[int] = mapped_column(Integer, default=0)
    image_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set by the one cancel that won; the request ends `cancelled` once in-flight images end.
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # 1 + the number of retries: each run that finalizes creates its own webhook event.
    runs: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Its jobs reached the queue (set after the upload's enqueue): a request still False a
    # few seconds after its creation lost its enqueue, and the sweeper enqueues it.
    enqueued: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Set by the delete that won: the request is gone for every route from then on, while
    # its objects and then its rows are removed (a crash leaves it to be deleted again).
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    filename: Mapped[str | None] = mapped_column(Text)  # the uploaded file's name, if any
    # What the request came to, written when it finalizes (NULL before, and again while a
    # retry runs): history pages read it instead of counting a large request's images.
    done_images: Mapped[int | None] = mapped_column(Integer)
    failed_images: Mapped[int | None] = mapped_column(Integer)
    cancelled_images: Mapped[int | None] = mapped_column(Integer)
    bytes_in: Mapped[int | None] = mapped_column(BigInteger)  # over done images
    bytes_out: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_requests_status_updated", "status", "updated_at"),
        Index("ix_requests_enqueued", "enqueued", "created_at"),
        Index("ix_requests_completed_at", "completed_at"),  # retention: oldest final first
        # Only the few requests being deleted: an index of every NULL would also tempt
        # SQLite's planner into reading it for `deleted_at IS NULL`, i.e. every request.
        Index(
            "ix_requests_deleted_at",
            "deleted_at",
            sqlite_where=text("deleted_at IS NOT NULL"),
            postgresql_where=text("deleted_at IS NOT NULL"),
        ),
        # History, newest first: one index per filter (owner with API keys, status or not).
        Index("ix_requests_created", "created_at", "id"),
        Index("ix_requests_status_created", "status", "created_at", "id"),
        Index("ix_requests_owner_created", "owner", "created_at", "id"),
        Index("ix_requests_owner_status_created", "owner", "status", "created_at", "id"),
    )


class Product(Base):
    """One CSV row; `position` keeps input order for the output CSV."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    row: Mapped[int] = mapped_column(Integer)
    serial_number: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("request_id", "position"),)


class Image(Base):
    """One input URL of one product, and what became of it."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    input_url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    output_key: Mapped[str | None] = mapped_column(Text)
    output_url: Mapped[str | None] = mapped_column(Text)
    output_format: Mapped[str | None] = mapped_column(String(8))
    bytes_in: Mapped[int | None] = mapped_column(BigInteger)
    bytes_out: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    kept_original: Mapped[bool | None] = mapped_column(Boolean)
    quality: Mapped[int | None] = mapped_column(Integer)  # encoded with; None: lossless or kept
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A backend's fault gave the image back: not claimed before `retry_at`; its streak of
    # faults of `fault_kind` began at `fault_since` (the bounded retry time counts from it).
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fault_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fault_kind: Mapped[str | None] = mapped_column(String(16))
    # A request's repeated URL is fetched once: a later position naming it follows the first
    # (`source_image_id`), is never claimed, and takes the source's result when it is
    # recorded; the source counts its `followers`.
    source_image_id: Mapped[int | None] = mapped_column(Integer, index=True)
    followers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        UniqueConstraint("product_id", "position"),
        # Covers progress counts and "last change" (max finished_at) without touching rows.
        Index("ix_images_request_status", "request_id", "status", "finished_at"),
        Index("ix_images_status_lease", "status", "lease_until"),
        Index("ix_images_status_enqueued", "status", "enqueued_at"),
    )


class QueueMark(Base):
    """The sweeper's mark in the queue (one row): jobs enqueued before it left the queue
    once it is `seen`, so only their images can have lost their job (see `jobs.sweeper`)."""

    __tablename__ = "queue_marks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    token: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_depth: Mapped[int | None] = mapped_column(Integer)  # jobs waiting when it was sent
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One event to one URL; retried by the delivery loop until delivered or given up."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)  # the `webhook-id` header
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    run: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # request's run
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The receiver (`scheme://host:port` of `url`): its pause and its share of the senders.
    receiver: Mapped[str | None] = mapped_column(String(300))

    __table_args__ = (
        Index("ix_webhook_deliveries_receiver", "receiver", "status"),
        # One event per finalization: a retried request finalizes again in a new run.
        UniqueConstraint(
            "request_id", "event_type", "run", name="uq_webhook_deliveries_request_event_run"
        ),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )


class WebhookSecret(Base):
    """The secret that signs deliveries to the webhook URLs one API key uploads with.

    Rotation keeps the previous secret valid until `previous_until`: meanwhile every
    delivery carries a signature with each (Standard Webhooks allows several).
    """

    __tablename__ = "webhook_secrets"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the key
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookReceiver(Base):
    """A receiver (`scheme://host:port`) that keeps failing: paused as a whole, for everyone."""

    __tablename__ = "webhook_receivers"

    origin: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # in a row, since a success
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    """An upload's `Idempotency-Key`: who sent it (`scope`), what it created, what we answered.

    The unique (scope, key) constraint is what makes two concurrent uploads with one key
    create one request: the second insert fails however the two interleave.
    """

    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(128))  # "key:<digest>" or "addr:<client>"
    key: Mapped[str] = mapped_column(String(255))
    body_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the CSV and the options
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    response: Mapped[str] = mapped_column(Text)  # the 202 body, JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("scope", "key", name="uq_idempotency_keys_scope_key"),
        Index("ix_idempotency_keys_created_at", "created_at"),
        Index("ix_idempotency_keys_request_id", "request_id"),
    )


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery, kept for the deliveries API."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
