"""Webhook decisions that need no I/O: the event body, attempt outcomes, the retry schedule.

Kept apart from `deliveries` (rows, claiming, the delivery loop) so the rules
can be read and tested on their own.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from imgbatch.ledger.clock import isoformat

COMPLETED_EVENT = "request.completed"
# Delivery statuses
PENDING, DELIVERING, DELIVERED, FAILED = "pending", "delivering", "delivered", "failed"
PERMANENT_CODES = ("bad_url", "blocked_address")  # refused before sending: retrying cannot help
JITTER = 0.2  # each retry delay is the schedule step times a random factor in [0.8, 1.2]


def completion_event(
    *,
    request_id: str,
    status: str,
    progress: Mapping[str, Any],
    savings: Mapping[str, Any],
    created_at: datetime,
    completed_at: datetime | None,
    base_url: str,
    now: datetime,
) -> bytes:
    """The `request.completed` body: small (no per-image lists), with absolute links."""
    event = {
        "type": COMPLETED_EVENT,
        "timestamp": isoformat(now),
        "data": {
            "request_id": request_id,
            "status": status,
            "progress": dict(progress),
            "savings": dict(savings),
            "output_csv_url": f"{base_url}/api/requests/{request_id}/output.csv",
            "status_url": f"{base_url}/api/status/{request_id}",
            "created_at": isoformat(created_at),
            "completed_at": isoformat(completed_at),
        },
    }
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None
    permanent: bool = False  # no further attempts (410 Gone, a refused address)
    retry_after: float | None = None  # seconds the receiver asked us to wait


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def outcome_from_response(status: int, headers: Mapping[str, str], now: datetime) -> Outcome:
    """Any 2xx is delivered; 410 stops at once; a 3xx is a failure (redirects are not followed)."""
    if 200 <= status < 300:
        return Outcome(delivered=True, status_code=status)
    retry_after = parse_retry_after(_header(headers, "retry-after"), now)
    if status == 410:
        return Outcome(
            False, status, "410 Gone: the receiver asked for no more deliveries", permanent=True
        )
    if 300 <= status < 400:
        location = (_header(headers, "location") or "")[:200]
        error = f"HTTP {status}: redirect to {location or '(no Location)'} not followed"
        return Outcome(False, status, error, retry_after=retry_after)
    return Outcome(False, status, f"HTTP {status}", retry_after=retry_after)


def outcome_from_error(code: str, message: str) -> Outcome:
    """A send that got no HTTP answer: refused addresses are final, the rest is retried."""
    permanent = code in PERMANENT_CODES
    return Outcome(False, None, f"{code}: {message}"[:2000], permanent=permanent)


def retry_delay(
    attempts: int,
    outcome: Outcome,
    schedule: Sequence[float],
    rng: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after `attempts` attempts, or None to give up.

    Attempt n failing waits `schedule[n-1]` (with jitter), so an event gets at
    most `len(schedule) + 1` attempts. A `Retry-After` replaces the step, capped
    at the schedule's longest step so a receiver cannot park an event forever.
    """
    if outcome.delivered or outcome.permanent or attempts > len(schedule):
        return None
    if outcome.retry_after is not None:
        return min(outcome.retry_after, max(schedule))
    step = schedule[attempts - 1]
    factor = 1 + JITTER * (2 * (rng or random).random() - 1)
    return max(0.0, step * factor)


# --- receivers ----------------------------------------------------------------------------

# A receiver that failed this many attempts in a row (no answer in time, refused
# connections, 5xx, 429) is paused as a whole: none of its deliveries is attempted
# until the pause ends, then one attempt decides (a success ends it, a failure doubles it).
PAUSE_AFTER = 3
FIRST_PAUSE = 30.0
LONGEST_PAUSE = 3600.0
SENDS_PER_RECEIVER = 2  # attempts in flight to one receiver, per worker process


def receiver_of(url: str) -> str:
    """The receiver a URL names: `scheme://host:port`, what its pause and share apply to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = 0
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"[:300]


def counts_against_receiver(outcome: Outcome) -> bool:
    """Whether an attempt's outcome says the receiver is unwell (not the event's fault)."""
    if outcome.delivered:
        return False
    if outcome.status_code is None:  # timeout, refused, reset: no answer at all
        return not outcome.permanent
    return outcome.status_code == 429 or outcome.status_code >= 500


def receiver_pause(failures: int, retry_after: float | None = None) -> float | None:
    """Seconds to pause a receiver after `failures` failed attempts in a row (None: not yet).

    30 s after the third, then doubling up to an hour; a `Retry-After` lengthens it.
    """
    if failures < PAUSE_AFTER:
        return None
    pause = min(FIRST_PAUSE * 2 ** (failures - PAUSE_AFTER), LONGEST_PAUSE)
    if retry_after is not None:
        pause = max(pause, min(retry_after, LONGEST_PAUSE))
    return pause
