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
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from imgbatch import ledger, metrics
from imgbatch.config import Settings
from imgbatch.errors import ImageFailure
from imgbatch.ledger import Request, WebhookAttempt, WebhookDelivery, WebhookReceiver, utcnow
from imgbatch.ledger import statuses as st

from .receiver_secrets import signer_for_delivery
from .receivers import note_outcome, paused_receivers
from .rules import (
    COMPLETED_EVENT,
    DELIVERED,
    DELIVERING,
    FAILED,
    PENDING,
    SENDS_PER_RECEIVER,
    Outcome,
    completion_event,
    outcome_from_error,
    outcome_from_response,
    receiver_of,
    retry_delay,
)
from .signing import InvalidSecret, Signer, signer_for, webhook_headers

if TYPE_CHECKING:
    from imgbatch.context import Context

log = logging.getLogger(__name__)

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
    receiver: str | None = None  # `scheme://host:port` (None: a row from before receivers)
    own_url: bool = False  # the upload's own webhook_url (else the operator's receiver)
    owner: str | None = None  # the API key's digest, whose secret signs an own URL
    request_secret: str | None = None  # open mode: the upload's own secret


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
    receiver = receiver_of(url)
    paused = session.execute(
        select(WebhookReceiver.paused_until).where(WebhookReceiver.origin == receiver)
    ).scalar()
    delivery = WebhookDelivery(
        event_id=new_event_id(),
        receiver=receiver,
        request_id=request.id,
        event_type=COMPLETED_EVENT,
        run=request.runs,
        url=url,
        payload=body.decode("utf-8"),
        status=PENDING,
        attempts=0,
        next_attempt_at=paused if paused is not None and paused > now else now,
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


def claim_due(ctx: Context, limit: int, busy: dict[str, int] | None = None) -> list[Claim]:
    """Claim up to `limit` due deliveries for this process (each claim its own transaction).

    Paused receivers are skipped, and a receiver gets at most `SENDS_PER_RECEIVER`
    attempts in flight (`busy`: this process's attempts in flight, per receiver).
    """
    busy = dict(busy or {})
    now = utcnow()
    skip = set(paused_receivers(ctx.db, now))
    skip |= {r for r, n in busy.items() if n >= SENDS_PER_RECEIVER}
    query = select(WebhookDelivery.id, WebhookDelivery.receiver).where(_due(now))
    if skip:
        query = query.where(
            or_(WebhookDelivery.receiver.is_(None), WebhookDelivery.receiver.not_in(skip))
        )
    with ctx.db.session() as session:
        candidates = session.execute(
            query.order_by(WebhookDelivery.next_attempt_at).limit(limit * SENDS_PER_RECEIVER)
        ).all()
    chosen: list[int] = []
    for delivery_id, receiver in candidates:
        if len(chosen) == limit:
            break
        if receiver is not None:
            if busy.get(receiver, 0) >= SENDS_PER_RECEIVER:
                continue
            busy[receiver] = busy.get(receiver, 0) + 1
        chosen.append(delivery_id)
    claims = (_claim(ctx, delivery_id) for delivery_id in chosen)
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
                WebhookDelivery.receiver,
            )
        ).first()
        if row is None:
            return None  # another sender won it
        request = session.execute(
            select(Request.owner, Request.webhook_url, Request.webhook_secret).where(
                Request.id == row.request_id
            )
        ).first()
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
        event_id, request_id, url, payload, attempts, receiver = row
        return Claim(
            delivery_id,
            event_id,
            request_id,
            url,
            payload.encode(),
            attempts,
            attempt.id,
            receiver=receiver,
            own_url=request is not None and request.webhook_url is not None,
            owner=request.owner if request is not None else None,
            request_secret=request.webhook_secret if request is not None else None,
        )


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


def attempt(ctx: Context, operator: Signer | None, claim: Claim) -> str | None:
    """Send one claimed attempt and record it; never raises.

    `operator` signs for the operator's receiver only; an upload's own webhook_url is
    signed with its uploader's secret (`receiver_secrets`).
    """
    extra = {"request_id": claim.request_id, "event_id": claim.event_id}
    started = time.perf_counter()
    try:
        signer = signer_for_delivery(
            ctx,
            operator,
            own_url=claim.own_url,
            owner=claim.owner,
            request_secret=claim.request_secret,
        )
        headers = webhook_headers(claim.event_id, claim.payload, int(time.time()), signer)
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
        paused = note_outcome(ctx.db, claim.receiver, outcome)
    except Exception:
        log.exception("could not record a webhook attempt; its lease will expire", extra=extra)
        return None
    if paused is not None:
        log.warning(
            "webhook receiver %s keeps failing: paused until %s",
            claim.receiver if claim.own_url else "(the operator's)",
            paused.isoformat(timespec="seconds"),
            extra=extra,
        )
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
    """Claim what is due, send it concurrently (`SENDS_PER_RECEIVER` at a time to one
    receiver), wait, and again until nothing is due or `limit` attempts were made; the
    number of attempts made."""
    signer = signer_for(ctx.settings.webhook_secret)
    made = 0
    while made < limit:
        claims = claim_due(ctx, limit - made)
        if not claims:
            break
        senders = min(ctx.settings.webhook_senders, len(claims))
        with ThreadPoolExecutor(senders, thread_name_prefix="webhook") as pool:
            list(pool.map(lambda claim: attempt(ctx, signer, claim), claims))
        made += len(claims)
    return made


def run_delivery_loop(ctx: Context, stop: threading.Event) -> None:
    """Send due deliveries until `stop` is set, `IMGBATCH_WEBHOOK_SENDERS` at a time, at most
    `SENDS_PER_RECEIVER` to one receiver; survives any error."""
    try:
        signer = signer_for(ctx.settings.webhook_secret)
    except InvalidSecret as exc:
        log.error("%s; webhooks stay queued and unsent until it is fixed", exc)
        return
    if signer is None:
        log.warning(
            "IMGBATCH_WEBHOOK_SECRET is not set: events to IMGBATCH_WEBHOOK_URL are sent unsigned"
        )
    poll = ctx.settings.webhook_poll_interval
    senders = ctx.settings.webhook_senders
    slot_freed = threading.Event()
    in_flight: dict[Future[str | None], str | None] = {}  # attempt -> its receiver
    pool = ThreadPoolExecutor(senders, thread_name_prefix="webhook")
    try:
        while not stop.is_set():
            in_flight = {f: r for f, r in in_flight.items() if not f.done()}
            free = senders - len(in_flight)
            slot_freed.clear()
            claims: list[Claim] = []
            if free > 0:
                busy = Counter(r for r in in_flight.values() if r is not None)
                try:
                    claims = claim_due(ctx, free, busy)
                except Exception:
                    log.exception("claiming webhook deliveries failed; trying again")
            for claim in claims:
                future = pool.submit(attempt, ctx, signer, claim)
                future.add_done_callback(lambda _f: slot_freed.set())
                in_flight[future] = claim.receiver
            if free > 0 and len(claims) < free:
                stop.wait(poll)  # nothing more is due now
            else:
                slot_freed.wait(poll)  # more may be due: go on as soon as a sender is free
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
