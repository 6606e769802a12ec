"""Which secret signs a delivery: one per receiver, as Svix and Stripe do (one per endpoint).

Every delivery used to be signed with the operator's `IMGBATCH_WEBHOOK_SECRET`, so an
uploader who pointed `webhook_url` at itself received events signed with the operator's
secret and could replay them to the operator's receiver, which accepted them. Now:

- the operator's receiver (`IMGBATCH_WEBHOOK_URL`, for uploads without a webhook_url) gets
  events signed with the operator's secret, and only it does;
- an upload's own `webhook_url`, with API keys, gets events signed with that key's secret
  (`webhook_secrets`: created on first use, read and rotated through
  `/api/webhook-secret`; a rotated secret keeps signing beside the new one for
  `ROTATION_GRACE`, so receivers can switch without missing an event);
- without API keys, with a secret made for that upload and returned once, in its `202`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from imgbatch.ledger import WebhookSecret, isoformat, utcnow

from .signing import Signer, new_secret

if TYPE_CHECKING:
    from imgbatch.context import Context
    from imgbatch.ledger import Database

log = logging.getLogger(__name__)

ROTATION_GRACE = timedelta(hours=24)  # a rotated secret still signs, beside the new one


@dataclass(frozen=True)
class KeySecret:
    """What `/api/webhook-secret` shows to the key it belongs to."""

    secret: str
    created_at: datetime
    rotated_at: datetime | None
    previous_valid_until: datetime | None

    def as_dict(self) -> dict[str, object]:
        return {
            "secret": self.secret,
            "created_at": isoformat(self.created_at),
            "rotated_at": isoformat(self.rotated_at),
            "previous_valid_until": isoformat(self.previous_valid_until),
        }


def _shown(row: WebhookSecret, now: datetime) -> KeySecret:
    until = row.previous_until if row.previous_until and row.previous_until > now else None
    return KeySecret(row.secret, row.created_at, row.rotated_at, until)


def key_secret(db: Database, owner: str) -> KeySecret:
    """The key's signing secret, made on first use (two first uses at once: one wins)."""
    now = utcnow()
    with db.session() as session:
        row = session.get(WebhookSecret, owner)
        if row is not None:
            return _shown(row, now)
    try:
        with db.session() as session:
            row = WebhookSecret(owner=owner, secret=new_secret(), created_at=now)
            session.add(row)
            session.flush()
            return _shown(row, now)
    except IntegrityError:  # another process made it first: that one is the key's secret
        with db.session() as session:
            found = session.get(WebhookSecret, owner)
            assert found is not None
            return _shown(found, now)


def rotate_key_secret(db: Database, owner: str) -> KeySecret:
    """A new secret for the key; the old one keeps signing beside it for `ROTATION_GRACE`."""
    key_secret(db, owner)  # there is one to rotate
    now = utcnow()
    with db.session() as session:
        row = session.get(WebhookSecret, owner, with_for_update=True)
        assert row is not None
        row.previous_secret, row.previous_until = row.secret, now + ROTATION_GRACE
        row.secret, row.rotated_at = new_secret(), now
        session.flush()
        return _shown(row, now)


def _key_signer(db: Database, owner: str) -> Signer:
    now = utcnow()
    with db.session() as session:
        row = session.get(WebhookSecret, owner)
    if row is None:  # an upload makes it; a key that never read it still gets signed events
        return Signer(key_secret(db, owner).secret)
    if row.previous_secret and row.previous_until and row.previous_until > now:
        return Signer(row.secret, row.previous_secret)
    return Signer(row.secret)


def signer_for_delivery(
    ctx: Context,
    operator: Signer | None,
    *,
    own_url: bool,
    owner: str | None,
    request_secret: str | None,
) -> Signer | None:
    """The signer for one delivery: the operator's only for the operator's receiver."""
    if not own_url:
        return operator
    if owner is not None:
        return _key_signer(ctx.db, owner)
    if request_secret:
        return Signer(request_secret)
    # An upload from before per-receiver secrets: its uploader could never verify it (it
    # did not know the operator's secret), so it goes unsigned rather than with that secret.
    return None
