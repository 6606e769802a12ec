"""Webhook deliveries: one row per event, sent and retried by a loop in every worker.

- The finalizer that wins creates the `request.completed` row in its own
  transaction (`create_completion_delivery`), so an event exists exactly when
  the request is final; the unique (request_id, event_type, run) constraint backs
  it. A retried request runs again (`requests.runs + 1`) and its next
  finalization creates a new event with a new `webhook-id`.
- A sender claims a due row by a conditional UPDATE (`pending` and due, or
  `delivering` with an expired lease → `delivering` with a new lease and
  `attempts + 1`), so any number of worker processes on any number of machines
  never send the same attempt twice. `attempts` is the claim token: a result is
  recorded on the row only by the holder of the current claim.
- Every attempt is a `webhook_attempts` row, opened at claim time, so an
  attempt whose worker died shows up as interrupted instead of vanishing.
- Rows survive restarts: a pending retry is picked up by whichever worker runs next.

The pure rules (event body, outcomes, schedule) are in `rules`, the read models
and redelivery in `reads`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from imgbatch import ledger, metrics
from imgbatch.config import Settings
from imgbatch.errors import ImageFailure
from imgbatch.ledger import Request, WebhookAttempt, WebhookDelivery, utcnow
from imgbatch.ledger import statuses as st

from .rules import (
    COMPLETED_EVENT,
    DELIVERED,
    DELIVERING,
    FAILED,
    PENDING,
    Outcome,
    completion_event,
    outcome_from_error,
    outcome_from_response,
    retry_delay,
)
from .signing import InvalidSecret, Signer, signer_for, webhook_headers

if TYPE_CHECKING:
    from imgbatch.context import Context

log = logging.getLogger(__name__)

SENDERS = 4  # concurrent sends per process: one hanging receiver holds one slot, not the loop
LEASE_MARGIN = 30.0  # seconds beyond the send timeout before a claim counts as abandoned
INTERRUPTED = "interrupted: the sender stopped before recording a result"


@dataclass(frozen=True)
class Claim:
    """One claimed attempt: everything needed to send it, read in the claiming transaction."""

    delivery_id: int
    event_id: str
    request_id: str
    url: str
    payload: bytes
    attempt: int  # the delivery's `attempts` after this claim: the claim token
    attempt_row: int


def new_event_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def create_completion_delivery(
    session: Session, request: Request, settings: Settings
) -> WebhookDelivery | None:
    """Create the `request.completed` delivery in the finalizing transaction (None: no URL)."""
    url = request.webhook_url or settings.webhook_url
    if not url:
        return None
    now = utcnow()
    progress = st.progress_from_counts(ledger.image_counts(session, request.id))
    savings = ledger.image_savings(session, request.id)
    body = completion_event(
        request_id=request.id,
        status=request.status,
        progress=progress.as_dict(),
        savings=savings.as_dict(),
        created_at=request.created_at,
        completed_at=request.completed_at,
        base_url=settings.resolved_public_base_url,
        now=now,
    )
    delivery = WebhookDelivery(
        event_id=new_event_id(),
        request_id=request.id,
        event_type=COMPLETED_EVENT,
        run=request.runs,
        url=url,
        payload=body.decode("utf-8"),
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(delivery)
    session.flush()
    log.info(
        "webhook event created",
        extra={"request_id": request.id, "event_id": delivery.event_id},
    )
    return delivery


# --- claiming and recording ---------------------------------------------------------


def _due(now: datetime) -> Any:
    return or_(
        and_(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now),
        and_(WebhookDelivery.status == DELIVERING, WebhookDelivery.lease_until < now),
    )


def lease_seconds(settings: Settings) -> float:
    return settings.webhook_timeout + LEASE_MARGIN


def claim_due(ctx: Context, limit: int) -> list[Claim]:
    """Claim up to `limit` due deliveries for this process (each claim its own transaction)."""
    with ctx.db.session() as session:
        candidates = session.execute(
            select(WebhookDelivery.id)
            .where(_due(utcnow()))
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        ).scalars()
        ids = list(candidates)
    claims = (_claim(ctx, delivery_id) for delivery_id in ids)
    return [claim for claim in claims if claim is not None]


def _claim(ctx: Context, delivery_id: int) -> Claim | None:
    now = utcnow()
    lease_until = now + timedelta(seconds=lease_seconds(ctx.settings))
    with ctx.db.session() as session:
        row = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, _due(now))
            .values(
                status=DELIVERING,
                lease_until=lease_until,
                attempts=WebhookDelivery.attempts + 1,
                updated_at=now,
            )
            .returning(
                WebhookDelivery.event_id,
                WebhookDelivery.request_id,
                WebhookDelivery.url,
                WebhookDelivery.payload,
                WebhookDelivery.attempts,
            )
        ).first()
        if row is None:
            return None  # another sender won it
        session.execute(  # an earlier claim whose sender died mid-attempt
            update(WebhookAttempt)
            .where(
                WebhookAttempt.delivery_id == delivery_id,
                WebhookAttempt.status_code.is_(None),
                WebhookAttempt.error.is_(None),
            )
            .values(error=INTERRUPTED)
        )
        attempt = WebhookAttempt(delivery_id=delivery_id, attempted_at=now)
        session.add(attempt)
        session.flush()
        event_id, request_id, url, payload, attempts = row
        return Claim(delivery_id, event_id, request_id, url, payload.encode(), attempts, attempt.id)


def record_outcome(ctx: Context, claim: Claim, outcome: Outcome, duration_ms: int) -> str | None:
    """Store the attempt and move the delivery on; the new status, or None if our claim was lost."""
    now = utcnow()
    delay = retry_delay(claim.attempt, outcome, ctx.settings.webhook_schedule)
    if outcome.delivered:
        status, next_at = DELIVERED, None
    elif delay is None:
        status, next_at = FAILED, None
    else:
        status, next_at = PENDING, now + timedelta(seconds=delay)
    with ctx.db.session() as session:
        session.execute(
            update(WebhookAttempt)
            .where(WebhookAttempt.id == claim.attempt_row)
            .values(status_code=outcome.status_code, error=outcome.error, duration_ms=duration_ms)
        )
        result = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == claim.delivery_id,
                WebhookDelivery.status == DELIVERING,
                WebhookDelivery.attempts == claim.attempt,
            )
            .values(
                status=status,
                next_attempt_at=next_at,
                lease_until=None,
                last_status_code=outcome.status_code,
                last_error=outcome.error,
                updated_at=now,
                **({"delivered_at": now} if outcome.delivered else {}),
            )
        )
        won = bool(result.rowcount)  # type: ignore[attr-defined]
    return status if won else None


# --- sending ---------------------------------------------------------------------------


def attempt(ctx: Context, signer: Signer | None, claim: Claim) -> str | None:
    """Send one claimed attempt and record it; never raises."""
    extra = {"request_id": claim.request_id, "event_id": claim.event_id}
    headers = webhook_headers(claim.event_id, claim.payload, int(time.time()), signer)
    started = time.perf_counter()
    try:
        answer = ctx.fetcher.post(claim.url, claim.payload, headers, ctx.settings.webhook_timeout)
    except ImageFailure as failure:
        outcome = outcome_from_error(failure.code, failure.message)
    except Exception:  # a bug must cost one attempt, not the loop
        log.exception("webhook attempt crashed", extra=extra)
        outcome = outcome_from_error("internal", "the attempt failed on our side (logged)")
    else:
        outcome = outcome_from_response(answer.status, answer.headers, utcnow())
    duration_ms = int((time.perf_counter() - started) * 1000)
    try:
        status = record_outcome(ctx, claim, outcome, duration_ms)
    except Exception:
        log.exception("could not record a webhook attempt; its lease will expire", extra=extra)
        return None
    metrics.webhook_delivery(status)
    level = logging.INFO if outcome.delivered or status == PENDING else logging.WARNING
    log.log(
        level,
        "webhook attempt %d: %s -> %s",
        claim.attempt,
        outcome.status_code or outcome.error,
        status or "claim lost",
        extra=extra,
    )
    return status


def deliver_due(ctx: Context, limit: int = 100) -> int:
    """One pass: claim what is due, send it concurrently, wait; the number of attempts made."""
    signer = signer_for(ctx.settings.webhook_secret)
    claims = claim_due(ctx, limit)
    if claims:
        with ThreadPoolExecutor(min(SENDERS, len(claims)), thread_name_prefix="webhook") as pool:
            list(pool.map(lambda claim: attempt(ctx, signer, claim), claims))
    return len(claims)


def run_delivery_loop(ctx: Context, stop: threading.Event) -> None:
    """Send due deliveries until `stop` is set, `SENDERS` at a time; survives any error."""
    try:
        signer = signer_for(ctx.settings.webhook_secret)
    except InvalidSecret as exc:
        log.error("%s; webhooks stay queued and unsent until it is fixed", exc)
        return
    if signer is None:
        log.warning("IMGBATCH_WEBHOOK_SECRET is not set: webhooks are sent unsigned")
    poll = ctx.settings.webhook_poll_interval
    slot_freed = threading.Event()
    in_flight: set[Future[str | None]] = set()
    pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="webhook")
    try:
        while not stop.is_set():
            in_flight = {future for future in in_flight if not future.done()}
            free = SENDERS - len(in_flight)
            slot_freed.clear()
            claims: list[Claim] = []
            if free > 0:
                try:
                    claims = claim_due(ctx, free)
                except Exception:
                    log.exception("claiming webhook deliveries failed; trying again")
            for claim in claims:
                future = pool.submit(attempt, ctx, signer, claim)
                future.add_done_callback(lambda _f: slot_freed.set())
                in_flight.add(future)
            if free > 0 and len(claims) < free:
                stop.wait(poll)  # nothing more is due now
            else:
                slot_freed.wait(poll)  # more may be due: go on as soon as a sender is free
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
