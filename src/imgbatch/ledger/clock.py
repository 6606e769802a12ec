"""The ledger's clock and the one public timestamp format: pure, so rules outside the ledger
(webhook bodies) can format times without importing the database layer."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime | None) -> str | None:
    """The one timestamp format of every public document (status API, webhooks, deliveries):
    ISO 8601 in UTC with milliseconds and a `Z`, as Standard Webhooks' examples write it."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
