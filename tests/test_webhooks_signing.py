"""Signing: what we send is what the standardwebhooks verifier (and the spec's HMAC) accepts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import imgbatch
from imgbatch.webhooks import InvalidSecret, Signer, signer_for, webhook_headers

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = json.dumps({"type": "request.completed", "data": {"request_id": "r1"}}).encode()


def signed(body: bytes = BODY, msg_id: str = "msg_1", ts: int | None = None) -> dict[str, str]:
    return webhook_headers(msg_id, body, int(time.time()) if ts is None else ts, Signer(SECRET))


def test_standardwebhooks_verifier_accepts_what_we_send() -> None:
    headers = signed()
    assert Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, h: (body.replace(b"r1", b"r2"), h),
        lambda body, h: (body, {**h, "webhook-id": "msg_2"}),
        lambda body, h: (body, {**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}),
    ],
    ids=["body", "id", "timestamp"],
)
def test_standardwebhooks_verifier_rejects_tampering(
    tamper: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]],
) -> None:
    body, headers = tamper(BODY, signed())
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, headers)


def test_other_secret_is_rejected() -> None:
    other = "whsec_" + base64.b64encode(b"another key, another key, 32 by").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, signed())


def test_signature_is_the_spec_hmac_over_id_timestamp_body() -> None:
    """Independent of the library: v1,base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    headers = signed(ts=1_700_000_000)
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    assert headers["webhook-timestamp"] == "1700000000"


def test_headers_name_imgbatch_and_json() -> None:
    headers = signed()
    assert headers["Content-Type"] == "application/json"
    assert "imgbatch" in headers["User-Agent"]
    assert imgbatch.__version__ in headers["User-Agent"]
    assert headers["webhook-id"] == "msg_1"


def test_no_secret_means_unsigned() -> None:
    assert signer_for(None) is None
    assert signer_for("  ") is None
    headers = webhook_headers("msg_1", BODY, 1_700_000_000, None)
    assert "webhook-signature" not in headers
    assert headers["webhook-id"] == "msg_1"


def test_bad_secret_is_refused_without_revealing_it() -> None:
    with pytest.raises(InvalidSecret) as info:
        signer_for("whsec_")
    assert "whsec_" in str(info.value)  # names the expected shape...
    secret_like = "whsec_c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw=="
    assert secret_like not in repr(Signer(secret_like))  # ...never the value


def test_raw_base64_secret_without_prefix_also_works() -> None:
    raw = SECRET.removeprefix("whsec_")
    headers = webhook_headers("msg_1", BODY, int(time.time()), Signer(raw))
    assert Webhook(SECRET).verify(BODY, headers)


def test_a_rotation_signs_with_both_secrets_and_either_verifies() -> None:
    from standardwebhooks.webhooks import Webhook

    from imgbatch.webhooks import new_secret

    old, new = new_secret(), new_secret()
    assert old != new and old.startswith("whsec_")
    body = b'{"type":"request.completed"}'
    headers = webhook_headers("msg_1", body, int(time.time()), Signer(new, old))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        Webhook(secret).verify(body, headers)
