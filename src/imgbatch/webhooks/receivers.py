"""Receivers that keep failing are paused as a whole, for every sender on every machine.

Forty uploads whose webhook_url accepted connections and never answered delayed a fast
receiver's event by 98 s: four sender threads, each held 10 s per attempt, up to ten
attempts per event. Now the senders are many (`IMGBATCH_WEBHOOK_SENDERS`), one receiver
(`scheme://host:port`) has at most `SENDS_PER_RECEIVER` attempts in flight per process,
and a receiver whose attempts fail `PAUSE_AFTER` times in a row is paused: its deliveries
wait, their attempts unspent, until the pause ends (30 s, doubling to an hour); then the
next attempt decides. The state is one row per receiver (`webhook_receivers`), so every
process sees the same pause. The rules themselves are pure, in `rules`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from imgbatch.ledger import WebhookDelivery, WebhookReceiver, utcnow

from .rules import PENDING, Outcome, counts_against_receiver, receiver_pause

if TYPE_CHECKING:
    from imgbatch.ledger import Database


def paused_receivers(db: Database, now: datetime) -> dict[str, datetime]:
    """Receivers paused at `now`, with the end of each pause."""
    with db.session() as session:
        rows = session.execute(
            select(WebhookReceiver.origin, WebhookReceiver.paused_until).where(
                WebhookReceiver.paused_until > now
            )
        ).all()
    return {origin: until for origin, until in rows if until is not None}


def pause_of(db: Database, origin: str) -> datetime | None:
    """When the receiver's pause ends, if it is paused now."""
    with db.session() as session:
        until = session.execute(
            select(WebhookReceiver.paused_until).where(WebhookReceiver.origin == origin)
        ).scalar()
    return until if until is not None and until > utcnow() else None


def note_outcome(db: Database, origin: str | None, outcome: Outcome) -> datetime | None:
    """Count a failed attempt against its receiver, or clear its record on an answer;
    returns the end of a pause this attempt started."""
    if origin is None:
        return None
    now = utcnow()
    if not counts_against_receiver(outcome):
        with db.session() as session:  # it answered: whatever it said, it is alive
            session.execute(
                update(WebhookReceiver)
                .where(WebhookReceiver.origin == origin, WebhookReceiver.failures > 0)
                .values(failures=0, paused_until=None, last_error=None, updated_at=now)
            )
        return None
    failures = _count_failure(db, origin, outcome.error, now)
    pause = receiver_pause(failures, outcome.retry_after)
    if pause is None:
        return None
    until = now + timedelta(seconds=pause)
    with db.session() as session:
        session.execute(
            update(WebhookReceiver)
            .where(WebhookReceiver.origin == origin)
            .values(paused_until=until, updated_at=now)
        )
        # Its waiting deliveries wait for the pause, each keeping its own schedule after.
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.receiver == origin,
                WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at < until,
            )
            .values(next_attempt_at=until)
        )
    return until


def _count_failure(db: Database, origin: str, error: str | None, now: datetime) -> int:
    for _ in range(2):  # the row may be made by another process meanwhile: once more
        with db.session() as session:
            row = session.get(WebhookReceiver, origin, with_for_update=True)
            if row is not None:
                row.failures += 1
                row.last_error, row.updated_at = (error or "")[:500], now
                return row.failures
        try:
            with db.session() as session:
                session.add(
                    WebhookReceiver(
                        origin=origin, failures=1, last_error=(error or "")[:500], updated_at=now
                    )
                )
            return 1
        except IntegrityError:
            continue
    return 1
