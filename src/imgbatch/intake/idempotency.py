"""Idempotent uploads, as Stripe does them: a client's `Idempotency-Key` makes a retried
upload answer the first one's `202` again instead of creating a second request.

The same key from the same caller (API key, or client address when the API is open) with
the same upload within 24 hours replays the stored answer; with another upload it is
refused (`422 idempotency_key_reused`). "The same upload" is the CSV's bytes and the
options as parsed (quality, format, webhook URL, box), not the multipart framing or the
file's name, so a client may rebuild its request when it retries. The ledger's unique
constraint makes two concurrent uploads with one key create one request
(`ledger.idempotency`). An upload refused before it was stored (a CSV with errors) keeps
nothing: the key is free for the corrected upload.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from imgbatch.errors import ApiError
from imgbatch.ledger import StoredKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[\x20-\x7e]{1,255}$"  # 1-255 printable ASCII characters
_KEY = re.compile(KEY_PATTERN)


@dataclass(frozen=True)
class UploadKey:
    """An upload's key and whose it is (`scope`: "key:<digest>" or "addr:<client>")."""

    scope: str
    key: str


def check_key(value: str | None) -> str | None:
    """The header's value if it is a valid key; 400 `bad_idempotency_key` otherwise."""
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise ApiError(
            400,
            "bad_idempotency_key",
            f"{HEADER} must be 1-255 printable ASCII characters",
        )
    return value


def upload_hash(data: bytes, options: dict[str, Any]) -> str:
    """What makes two uploads the same: the CSV's bytes and the parsed options."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    digest.update(b"\n")
    digest.update(data)
    return digest.hexdigest()


def replayed_body(stored: StoredKey, body_hash: str) -> dict[str, Any]:
    """The first upload's answer, if this upload is the same; 422 if it is another."""
    if stored.body_hash != body_hash:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"this {HEADER} was used within 24 hours for a different upload "
            f"(request {stored.request_id}); use a new key for a new upload",
        )
    body: dict[str, Any] = json.loads(stored.response)
    return body
