"""Webhook read models for the API, and redelivery: what was sent, to where, with what result."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from imgbatch.errors import ApiError
from imgbatch.ledger import Request, WebhookAttempt, WebhookDelivery, isoformat, utcnow
from imgbatch.ledger import statuses as st

from .rules import COMPLETED_EVENT, DELIVERING, PENDING

if TYPE_CHECKING:
    from imgbatch.context import Context

log = logging.getLogger(__name__)


def display_url(url: str) -> str:
    """The URL without its query: receivers often put a token there."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "…" if parts.query else "", ""))


OPERATOR, UPLOAD = "operator", "upload"  # whose receiver a delivery goes to


def _public_url(url: str, receiver: str) -> str | None:
    """The operator's receiver is an internal service: its URL is not the uploader's to see."""
    return display_url(url) if receiver == UPLOAD else None


def _public_error(error: str | None, receiver: str) -> str | None:
    """For the operator's receiver only the kind of failure (`timeout`, `HTTP 503`): the
    details name its host, addresses or redirect targets."""
    if error is None or receiver == UPLOAD:
        return error
    return error.split(":", 1)[0]


def _completion_delivery(session: Session, request: Request) -> WebhookDelivery | None:
    """The completion event of the request's current run (a retry starts a new run)."""
    return session.execute(
        select(WebhookDelivery).where(
            WebhookDelivery.request_id == request.id,
            WebhookDelivery.event_type == COMPLETED_EVENT,
            WebhookDelivery.run == request.runs,
        )
    ).scalar_one_or_none()


def webhook_summary(
    session: Session, request: Request, default_url: str | None = None
) -> dict[str, Any] | None:
    """`{url, status, attempts}` for the status document; None when no webhook applies.

    Before the request is final there is no event yet: the status is `waiting` (also
    while a retried request runs again: its earlier events are in the deliveries list).
    """
    receiver = UPLOAD if request.webhook_url else OPERATOR
    delivery = _completion_delivery(session, request)
    if delivery is not None:
        return {
            "url": _public_url(delivery.url, receiver),
            "receiver": receiver,
            "status": delivery.status,
            "attempts": delivery.attempts,
        }
    url = request.webhook_url or default_url
    if not url or request.status in st.FINAL:
        return None  # finished before a webhook URL was configured: nothing was sent
    return {
        "url": _public_url(url, receiver),
        "receiver": receiver,
        "status": "waiting",
        "attempts": 0,
    }


def _describe(
    delivery: WebhookDelivery, attempts: list[WebhookAttempt], receiver: str
) -> dict[str, Any]:
    return {
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "run": delivery.run,
        "url": _public_url(delivery.url, receiver),
        "receiver": receiver,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": isoformat(delivery.next_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": _public_error(delivery.last_error, receiver),
        "created_at": isoformat(delivery.created_at),
        "updated_at": isoformat(delivery.updated_at),
        "delivered_at": isoformat(delivery.delivered_at),
        "attempt_history": [
            {
                "attempted_at": isoformat(a.attempted_at),
                "status_code": a.status_code,
                "error": _public_error(a.error, receiver),
                "duration_ms": a.duration_ms,
            }
            for a in attempts
        ],
    }


def list_deliveries(ctx: Context, request_id: str) -> list[dict[str, Any]]:
    """Every delivery of the request with its attempts, oldest first."""
    with ctx.db.session() as session:
        deliveries = list(
            session.execute(
                select(WebhookDelivery)
                .where(WebhookDelivery.request_id == request_id)
                .order_by(WebhookDelivery.id)
            ).scalars()
        )
        attempts: dict[int, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
        if deliveries:
            rows = session.execute(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id.in_(list(attempts)))
                .order_by(WebhookAttempt.id)
            ).scalars()
            for row in rows:
                attempts[row.delivery_id].append(row)
        own_url = session.execute(
            select(Request.webhook_url).where(Request.id == request_id)
        ).scalar()
        receiver = UPLOAD if own_url else OPERATOR
        return [_describe(d, attempts[d.id], receiver) for d in deliveries]


def redeliver(ctx: Context, request_id: str) -> dict[str, Any]:
    """Queue one more attempt of the latest completion event (same `webhook-id`); 409 when
    there is none."""
    now = utcnow()
    with ctx.db.session() as session:
        request = session.get(Request, request_id)
        if request is None:
            raise ApiError(404, "not_found", "no such request")
        if request.status not in st.FINAL:
            raise ApiError(409, "not_finished", f"the request is {request.status}; no event yet")
        delivery = _completion_delivery(session, request)
        if delivery is None:
            raise ApiError(
                409, "no_webhook_event", "no webhook URL applied when the request finished"
            )
        queued = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery.id,
                or_(WebhookDelivery.status != DELIVERING, WebhookDelivery.lease_until < now),
            )
            .values(status=PENDING, next_attempt_at=now, lease_until=None, updated_at=now)
        )
        if not queued.rowcount:  # type: ignore[attr-defined]
            raise ApiError(409, "delivery_in_progress", "an attempt is being sent right now")
        event_id = delivery.event_id
    log.info("webhook redelivery queued", extra={"request_id": request_id, "event_id": event_id})
    return {"request_id": request_id, "event_id": event_id, "status": PENDING}
