"""Webhook receivers through the real service: a secret per receiver, and no receiver,
however many hang, delays another's events.

Findings of the security review: every delivery was signed with the operator's
`IMGBATCH_WEBHOOK_SECRET`, so an uploader pointing `webhook_url` at itself got events it
could replay to the operator's receiver; and forty receivers that never answered delayed a
fast receiver's event by 98 s (four senders, 10 s each).
"""

from __future__ import annotations

import base64
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from support.imageserver import ImageServer
from support.receiver import Receiver
from support.service import Service, http, products_csv

OPERATOR_SECRET = "whsec_" + base64.b64encode(b"the-operators-own-secret-0123456").decode()
ALPHA, BETA = "alpha-" + "a" * 24, "beta-" + "b" * 24


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def verifies(secret: str, received: Any) -> bool:
    try:
        Webhook(secret).verify(received.body, received.headers)
    except WebhookVerificationError:
        return False
    return True


def get_json(url: str, key: str | None = None, method: str = "GET") -> tuple[int, Any]:
    status, _, raw = http(method, url, headers=bearer(key) if key else None)
    return status, json.loads(raw)


# --- a secret per receiver --------------------------------------------------------------------


@pytest.fixture(scope="module")
def operator_hook() -> Iterator[Receiver]:
    with Receiver(secret=OPERATOR_SECRET) as hook:
        yield hook


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, operator_hook: Receiver) -> Iterator[Service]:
    env = {
        "IMGBATCH_API_KEYS": f"{ALPHA},{BETA}",
        "IMGBATCH_UPLOAD_RATE_LIMIT": "0",
        "IMGBATCH_WEBHOOK_URL": operator_hook.url,
        "IMGBATCH_WEBHOOK_SECRET": OPERATOR_SECRET,
    }
    service = Service(tmp_path_factory.mktemp("keyed-hooks") / "data", env)
    try:
        service.start(workers=1, concurrency=2)
        yield service
    finally:
        service.stop()


def _upload(service: Service, image: str, key: str | None, hook: str | None) -> dict[str, Any]:
    fields = {"webhook_url": hook} if hook else {}
    status, answer = service.upload(
        products_csv([("Shoe", [image])]), bearer(key) if key else None, **fields
    )
    assert status == 202, answer
    return answer


def test_an_uploaders_receiver_gets_events_signed_with_its_keys_secret_never_the_operators(
    keyed: Service, operator_hook: Receiver, image_server: ImageServer
) -> None:
    status, alpha = get_json(f"{keyed.url}/api/webhook-secret", ALPHA)
    assert status == 200 and alpha["secret"].startswith("whsec_")
    assert get_json(f"{keyed.url}/api/webhook-secret", ALPHA)[1]["secret"] == alpha["secret"]
    beta = get_json(f"{keyed.url}/api/webhook-secret", BETA)[1]
    assert beta["secret"] != alpha["secret"]  # each key sees its own
    assert get_json(f"{keyed.url}/api/webhook-secret")[0] == 401

    with Receiver() as attacker:  # the uploader's own receiver
        answer = _upload(keyed, image_server.url("/photo0.jpg"), ALPHA, attacker.url)
        assert "webhook_secret" not in answer  # with keys, the key's secret signs it
        keyed.wait_final(answer["request_id"], headers=bearer(ALPHA))
        (event,) = attacker.wait_for(1)
    assert verifies(alpha["secret"], event)
    assert not verifies(OPERATOR_SECRET, event)  # was True before: the replay below worked
    # Replayed to the operator's receiver, the event is refused.
    before = len(operator_hook.requests)
    status, _, _ = http(
        "POST",
        operator_hook.url,
        event.body,
        {k: v for k, v in event.headers.items() if k.startswith("webhook-") or k == "content-type"},
    )
    assert status == 401
    assert operator_hook.requests[before].verified is False

    # An upload without webhook_url: the operator's receiver, the operator's secret.
    answer = _upload(keyed, image_server.url("/photo1.jpg"), ALPHA, None)
    doc = keyed.wait_final(answer["request_id"], headers=bearer(ALPHA))
    deadline = time.monotonic() + 30
    mine = []
    while not mine and time.monotonic() < deadline:
        mine = [
            r for r in operator_hook.requests if r.json()["data"]["request_id"] == doc["request_id"]
        ]
        time.sleep(0.1)
    (ours,) = mine
    assert ours.verified and verifies(OPERATOR_SECRET, ours)
    # The operator's receiver is an internal service: uploaders do not see where it is.
    summary = keyed.status(answer["request_id"], bearer(ALPHA))["webhook"]
    assert summary["receiver"] == "operator" and summary["url"] is None
    assert operator_hook.url.split("/")[2] not in json.dumps(summary)


def test_a_rotated_secret_signs_beside_the_new_one_for_a_day(
    keyed: Service, image_server: ImageServer
) -> None:
    old = get_json(f"{keyed.url}/api/webhook-secret", BETA)[1]["secret"]
    status, rotated = get_json(f"{keyed.url}/api/webhook-secret/rotate", BETA, "POST")
    assert status == 200 and rotated["secret"] != old
    assert rotated["previous_valid_until"] is not None and rotated["rotated_at"] is not None
    with Receiver() as hook:
        answer = _upload(keyed, image_server.url("/photo2.jpg"), BETA, hook.url)
        keyed.wait_final(answer["request_id"], headers=bearer(BETA))
        (event,) = hook.wait_for(1)
    assert verifies(rotated["secret"], event) and verifies(old, event)
    assert len(event.headers["webhook-signature"].split()) == 2
    assert get_json(f"{keyed.url}/api/webhook-secret", BETA)[1]["secret"] == rotated["secret"]


def test_without_api_keys_each_upload_gets_its_own_secret_once(
    tmp_path: Path, image_server: ImageServer
) -> None:
    env = {"IMGBATCH_WEBHOOK_SECRET": OPERATOR_SECRET, "IMGBATCH_UPLOAD_RATE_LIMIT": "0"}
    with Service(tmp_path / "data", env) as service, Receiver() as hook:
        service.start(workers=1, concurrency=2)
        first = _upload(service, image_server.url("/photo3.jpg"), None, hook.url)
        second = _upload(service, image_server.url("/photo4.jpg"), None, hook.url)
        assert first["webhook_secret"] != second["webhook_secret"]
        for answer in (first, second):
            doc = service.wait_final(answer["request_id"])
            assert answer["webhook_secret"] not in json.dumps(doc)
        events = {r.json()["data"]["request_id"]: r for r in hook.wait_for(2)}
        for answer in (first, second):
            event = events[answer["request_id"]]
            assert verifies(answer["webhook_secret"], event)
            assert not verifies(OPERATOR_SECRET, event)
        status, body = get_json(f"{service.url}/api/webhook-secret")
        assert status == 409 and body["error"]["code"] == "no_api_keys"


# --- receivers that hang --------------------------------------------------------------------


class Hanging:
    """Servers on loopback that accept connections and never answer; they count them."""

    def __init__(self, count: int) -> None:
        self.sockets = []
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            sock.setblocking(False)
            self.sockets.append(sock)
        self.urls = [f"http://127.0.0.1:{s.getsockname()[1]}/hook" for s in self.sockets]
        self.accepted = [0] * count
        self.accepted_at: list[list[float]] = [[] for _ in range(count)]
        self.open: list[list[socket.socket]] = [[] for _ in range(count)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for index, sock in enumerate(self.sockets):
            selector.register(sock, selectors.EVENT_READ, index)
        while not self._stop.is_set():
            for key, _ in selector.select(0.05):
                index = key.data
                conn, _ = self.sockets[index].accept()
                self.accepted[index] += 1
                self.accepted_at[index].append(time.monotonic())
                self.open[index].append(conn)

    def most_at_once(self, index: int, within: float) -> int:
        """The most connections accepted within `within` seconds of each other: with a
        send timeout longer than `within`, attempts that overlapped."""
        times = self.accepted_at[index]
        return max((sum(1 for t in times if 0 <= u - t < within) for u in times), default=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conns in self.open:
            for conn in conns:
                conn.close()
        for sock in self.sockets:
            sock.close()


def test_forty_hanging_receivers_do_not_delay_a_fast_ones_event(
    tmp_path: Path, image_server: ImageServer
) -> None:
    hanging = Hanging(40)
    env = {"IMGBATCH_UPLOAD_RATE_LIMIT": "0", "IMGBATCH_WEBHOOK_POLL_INTERVAL": "0.2"}
    try:
        with Service(tmp_path / "data", env) as service, Receiver() as fast:
            service.start(workers=1, concurrency=2)
            stuck = [
                _upload(service, image_server.url(f"/photo{i % 6}.jpg?n={i}"), None, url)
                for i, url in enumerate(hanging.urls)
            ]
            for answer in stuck:
                service.wait_final(answer["request_id"])
            deadline = time.monotonic() + 20
            while sum(hanging.accepted) < 40 and time.monotonic() < deadline:
                time.sleep(0.1)  # every hanging receiver holds an attempt of ours now
            answer = _upload(service, image_server.url("/photo5.jpg?fast"), None, fast.url)
            fast.trust(answer["webhook_secret"])
            service.wait_final(answer["request_id"], interval=0.05)
            finished = time.monotonic()
            (event,) = fast.wait_for(1, timeout=60)
            assert event.verified
            assert event.at - finished < 3, f"the fast receiver waited {event.at - finished:.1f} s"
            assert all(n >= 1 for n in hanging.accepted)  # they were all being tried
    finally:
        hanging.close()


def test_a_receiver_that_keeps_timing_out_is_paused_as_a_whole(
    tmp_path: Path, image_server: ImageServer
) -> None:
    hanging = Hanging(1)
    env = {
        "IMGBATCH_UPLOAD_RATE_LIMIT": "0",
        "IMGBATCH_WEBHOOK_TIMEOUT": "1",
        "IMGBATCH_WEBHOOK_SCHEDULE": "0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2",
        "IMGBATCH_WEBHOOK_POLL_INTERVAL": "0.1",
    }
    try:
        with Service(tmp_path / "data", env) as service:
            service.start(workers=1, concurrency=2)
            ids = [
                _upload(service, image_server.url(f"/photo{i}.jpg?p={i}"), None, hanging.urls[0])[
                    "request_id"
                ]
                for i in range(6)
            ]
            for request_id in ids:
                service.wait_final(request_id)
            time.sleep(6)  # long enough for three rounds of timeouts, and then some
            tried = hanging.accepted[0]
            time.sleep(5)
            assert hanging.accepted[0] == tried  # paused: no attempt meanwhile
            assert 3 <= tried <= 8  # a few attempts, at most two at a time, then the pause
            # One receiver: at most two attempts in flight (each hangs for the 1 s timeout).
            assert hanging.most_at_once(0, within=0.9) <= 2
            attempts = 0
            for request_id in ids:
                _, body = get_json(f"{service.url}/api/requests/{request_id}/webhooks")
                (delivery,) = body["deliveries"]
                assert delivery["status"] == "pending"  # waiting for the pause, not given up
                attempts += delivery["attempts"]
            assert attempts == tried
            assert "keeps failing: paused until" in service.logs()
    finally:
        hanging.close()
