"""Idempotency keys of uploads: one request per (caller, key) for 24 hours.

Enforced by the unique (scope, key) constraint, never by a read-then-write: the key row
is inserted in the transaction that creates the request, right after the request row, so
of two uploads with one key the second's insert fails (PostgreSQL makes it wait for the
first's commit; SQLite serialises the two writers) and everything it wrote rolls back.
Reading a key first (`find_key`) only saves parsing a CSV whose answer is known already.

A key is free again once its 24 hours are over, or once its request is deleted (the row
goes with the request by cascade; one whose request is being deleted no longer counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, delete, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .clock import utcnow
from .engine import Database
from .models import IdempotencyKey, Request

WINDOW = timedelta(hours=24)
EXPIRE_BATCH = 1000

_keys = cast(Table, IdempotencyKey.__table__)
_requests = cast(Table, Request.__table__)


@dataclass(frozen=True)
class IdempotencyRecord:
    """What an upload with a key stores: who, which key, which body, what we answered."""

    scope: str
    key: str
    body_hash: str
    response: str  # JSON of the 202 body


@dataclass(frozen=True)
class StoredKey:
    body_hash: str
    response: str
    request_id: str


class KeyTaken(Exception):
    """Another upload holds this key: it committed first."""


def insert_key(session: Session, record: IdempotencyRecord, request_id: str) -> None:
    """Insert the key row in the request's transaction (after the request row).

    A stale row for the same key (past its window, or its request being deleted) is
    removed first, in the same transaction. The insert's unique violation is raised as
    an `IntegrityError`; `is_key_conflict` recognises it.
    """
    now = utcnow()
    deleting = select(_requests.c.id).where(_requests.c.deleted_at.is_not(None))
    session.execute(
        delete(_keys).where(
            _keys.c.scope == record.scope,
            _keys.c.key == record.key,
            or_(_keys.c.created_at < now - WINDOW, _keys.c.request_id.in_(deleting)),
        )
    )
    session.execute(
        insert(_keys).values(
            scope=record.scope,
            key=record.key,
            body_hash=record.body_hash,
            request_id=request_id,
            response=record.response,
            created_at=now,
        )
    )


def is_key_conflict(exc: IntegrityError) -> bool:
    """Whether a unique violation is an idempotency key's (and not another constraint's)."""
    return "idempotency_keys" in str(exc.orig)


def find_key(db: Database, scope: str, key: str, now: datetime | None = None) -> StoredKey | None:
    """The live upload holding `key` for `scope`, if any."""
    since = (now or utcnow()) - WINDOW
    with db.connection() as conn:
        row = conn.execute(
            select(_keys.c.body_hash, _keys.c.response, _keys.c.request_id)
            .join(_requests, _requests.c.id == _keys.c.request_id)
            .where(
                _keys.c.scope == scope,
                _keys.c.key == key,
                _keys.c.created_at >= since,
                _requests.c.deleted_at.is_(None),
            )
        ).first()
    return None if row is None else StoredKey(row.body_hash, row.response, row.request_id)


def expire_keys(db: Database, limit: int = EXPIRE_BATCH) -> int:
    """Delete up to `limit` keys past their window (the sweeper's chore); how many."""
    before = utcnow() - WINDOW
    batch = select(_keys.c.id).where(_keys.c.created_at < before).limit(limit).scalar_subquery()
    with db.connection() as conn:
        return int(conn.execute(delete(_keys).where(_keys.c.id.in_(batch))).rowcount)
