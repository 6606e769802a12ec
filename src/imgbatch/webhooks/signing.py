"""Standard Webhooks signing: pure functions, no I/O.

A webhook carries `webhook-id` (stable across retries of one event),
`webhook-timestamp` (seconds since the epoch, fresh on every attempt) and
`webhook-signature` (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), as the
Standard Webhooks specification (https://www.standardwebhooks.com) describes.
The HMAC itself is the `standardwebhooks` package's, so what we send is what
its verifier (and every receiver library built on it) accepts.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from imgbatch import __version__

USER_AGENT = f"imgbatch/{__version__} (webhooks)"


class InvalidSecret(ValueError):
    """`IMGBATCH_WEBHOOK_SECRET` cannot be used (the message never contains the secret)."""


class Signer:
    """Signs webhook bodies with one secret (`whsec_<base64>`, as Standard Webhooks defines),
    or with several during a rotation: one signature each, space-separated, as the
    specification allows, so a receiver verifying with either secret accepts the event."""

    def __init__(self, secret: str, *more: str) -> None:
        try:
            self._webhooks = [Webhook(s) for s in (secret, *more)]
        except Exception:  # binascii.Error, EmptyWebhookSecretError, ...
            raise InvalidSecret(
                "IMGBATCH_WEBHOOK_SECRET must be 'whsec_' followed by base64 key bytes"
            ) from None

    def __repr__(self) -> str:
        return "Signer(<secret hidden>)"

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """`v1,<base64 signature>` over `msg_id.timestamp.body` (one per secret)."""
        moment = datetime.fromtimestamp(timestamp, UTC)
        text = body.decode("utf-8")
        return " ".join(
            webhook.sign(msg_id=msg_id, timestamp=moment, data=text) for webhook in self._webhooks
        )


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and 32 random bytes in base64 (as Svix makes them)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signer_for(secret: str | None) -> Signer | None:
    """A signer for the configured secret, or None to send unsigned. Raises InvalidSecret."""
    if secret is None or not secret.strip():
        return None
    return Signer(secret.strip())


def webhook_headers(
    msg_id: str, body: bytes, timestamp: int, signer: Signer | None
) -> dict[str, str]:
    """The headers of one delivery attempt; without a signer there is no `webhook-signature`."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
    }
    if signer is not None:
        headers["webhook-signature"] = signer.sign(msg_id, timestamp, body)
    return headers
