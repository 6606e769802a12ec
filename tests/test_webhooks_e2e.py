"""Webhooks through the real service: API and worker processes, real image server and receivers."""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.imageserver import ImageServer
from support.receiver import Receiver, Reply
from support.service import Service, http

SECRET = "whsec_" + base64.b64encode(b"e2e-webhook-secret-0123456789abc").decode()
BASE_ENV = {
    "IMGBATCH_WEBHOOK_SECRET": SECRET,
    "IMGBATCH_WEBHOOK_TIMEOUT": "4",
    "IMGBATCH_WEBHOOK_SCHEDULE": "0.2,0.4,0.8,1.6,3.2",
    "IMGBATCH_WEBHOOK_POLL_INTERVAL": "0.1",
}


def csv_bytes(urls_per_product: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    for serial, urls in enumerate(urls_per_product, start=1):
        writer.writerow([serial, f"Product {serial}", ",".join(urls)])
    return out.getvalue().encode()


def until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def deliveries(service: Service, request_id: str) -> list[dict[str, Any]]:
    status, _, raw = http("GET", f"{service.url}/api/requests/{request_id}/webhooks")
    assert status == 200, raw
    return json.loads(raw)["deliveries"]


def delivery_when(
    service: Service, request_id: str, ready: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        items = deliveries(service, request_id)
        return items[0] if items and ready(items[0]) else None

    return until(check, timeout, f"webhook delivery of {request_id}")


def upload(service: Service, urls: list[list[str]], webhook: Receiver | None = None) -> str:
    """Upload with `webhook`'s URL as the webhook_url: its events are signed with the secret
    the 202 answer carries (the service runs without API keys), which `webhook` then trusts."""
    fields = {"webhook_url": webhook.url} if webhook else {}
    status, answer = service.upload(csv_bytes(urls), None, **fields)
    assert status == 202, answer
    if webhook is not None:
        assert answer["webhook_secret"].startswith("whsec_")
        webhook.trust(answer["webhook_secret"])
    else:
        assert "webhook_secret" not in answer
    return answer["request_id"]


@pytest.fixture(scope="module")
def hooks_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One signed-webhook deployment shared by this module's tests (each uses its own receivers)."""
    service = Service(tmp_path_factory.mktemp("hooks") / "data", env=BASE_ENV)
    try:
        service.start(workers=1, concurrency=2)
        yield service
    finally:
        service.stop()


def test_each_finished_request_gets_one_verified_event(
    hooks_service: Service, image_server: ImageServer
) -> None:
    service = hooks_service
    with Receiver() as hook:
        good = upload(service, [[image_server.url("/photo0.jpg")]], webhook=hook)
        mixed = upload(
            service,
            [[image_server.url("/photo1.jpg"), image_server.url("/missing.jpg")]],
            webhook=hook,
        )
        docs = {rid: service.wait_final(rid) for rid in (good, mixed)}
        for rid in (good, mixed):
            delivery_when(service, rid, lambda d: d["status"] == "delivered")
        received = hook.requests
        assert len(received) == 2  # one event per request, no more
        assert all(r.verified for r in received)
        events = {e["data"]["request_id"]: e for e in (r.json() for r in received)}
        assert set(events) == {good, mixed}
        for rid, event in events.items():
            data, doc = event["data"], docs[rid]
            assert event["type"] == "request.completed"
            assert data["status"] == doc["status"]
            assert data["progress"] == doc["progress"]
            assert data["status_url"] == f"{service.url}/api/status/{rid}"
            assert data["output_csv_url"] == doc["output_csv_url"]
            code, headers, body = http("GET", data["output_csv_url"])
            assert code == 200 and headers["content-type"].startswith("text/csv")
            rows = list(csv.reader(io.StringIO(body.decode())))
            assert rows[0][-1] == "Output Image Urls" and len(rows) == 2
            assert service.status(rid)["webhook"] == {
                "url": hook.url,
                "receiver": "upload",
                "status": "delivered",
                "attempts": 1,
            }
        assert events[good]["data"]["status"] == "completed"
        assert events[mixed]["data"]["status"] == "completed_with_errors"
        assert events[mixed]["data"]["progress"]["failed"] == 1
        # the webhook-id the receiver saw is the delivery's event id
        (listed,) = deliveries(service, good)
        assert listed["event_id"] in {r.headers["webhook-id"] for r in received}
        assert [a["status_code"] for a in listed["attempt_history"]] == [200]


def test_500_twice_then_200(hooks_service: Service, image_server: ImageServer) -> None:
    with Receiver([500, 500, 200]) as hook:
        rid = upload(hooks_service, [[image_server.url("/photo2.jpg")]], webhook=hook)
        hooks_service.wait_final(rid)
        delivery = delivery_when(hooks_service, rid, lambda d: d["status"] == "delivered")
        received = hook.requests
        assert len(received) == 3
        assert {r.headers["webhook-id"] for r in received} == {delivery["event_id"]}
        assert all(r.verified for r in received)
        assert delivery["attempts"] == 3
        assert [a["status_code"] for a in delivery["attempt_history"]] == [500, 500, 200]


def test_receiver_down_when_finished_then_up(
    hooks_service: Service, image_server: ImageServer
) -> None:
    hook = Receiver()  # not listening yet
    try:
        rid = upload(hooks_service, [[image_server.url("/photo3.jpg")]], webhook=hook)
        hooks_service.wait_final(rid)
        failed_once = delivery_when(hooks_service, rid, lambda d: d["attempts"] >= 1)
        assert failed_once["status"] in ("pending", "delivering")
        assert failed_once["attempt_history"][0]["status_code"] is None
        hook.start()
        delivered = delivery_when(hooks_service, rid, lambda d: d["status"] == "delivered")
        assert len(hook.requests) == 1 and hook.requests[0].verified
        assert delivered["attempts"] >= 2
    finally:
        hook.stop()


def test_hanging_receiver_does_not_hold_up_other_requests(
    hooks_service: Service, image_server: ImageServer
) -> None:
    service = hooks_service
    with Receiver([Reply(delay=60)]) as hanging, Receiver() as fine:
        stuck = upload(service, [[image_server.url("/photo4.jpg")]], webhook=hanging)
        service.wait_final(stuck)
        (hung,) = hanging.wait_for(1)
        # while that attempt hangs, another request is processed and its event delivered
        other = upload(service, [[image_server.url("/photo5.jpg")]], webhook=fine)
        assert service.wait_final(other)["status"] == "completed"
        (delivered,) = fine.wait_for(1)
        assert delivered.at - hung.at < 4  # before the hanging attempt's 4 s timeout ran out
        timed_out = delivery_when(service, stuck, lambda d: d["attempt_history"][0]["error"])
        assert timed_out["attempt_history"][0]["error"].startswith("timeout")
        delivery_when(service, stuck, lambda d: d["status"] == "delivered")  # retried: 200
        assert len(hanging.requests) == 2


def test_redeliver_api(hooks_service: Service, image_server: ImageServer) -> None:
    service = hooks_service
    with Receiver() as hook:
        rid = upload(service, [[image_server.url("/photo0.jpg")]], webhook=hook)
        service.wait_final(rid)
        first = delivery_when(service, rid, lambda d: d["status"] == "delivered")
        code, _, raw = http("POST", f"{service.url}/api/requests/{rid}/webhooks/redeliver")
        assert code == 202, raw
        assert json.loads(raw)["event_id"] == first["event_id"]
        again = delivery_when(
            service, rid, lambda d: d["status"] == "delivered" and d["attempts"] == 2
        )
        one, two = hook.wait_for(2)
        assert one.headers["webhook-id"] == two.headers["webhook-id"] == first["event_id"]
        assert two.verified and len(again["attempt_history"]) == 2

        slow = image_server.url("/slow?seconds=3&file=photo1.jpg")
        busy = upload(service, [[slow]], webhook=hook)
        code, _, raw = http("POST", f"{service.url}/api/requests/{busy}/webhooks/redeliver")
        assert code == 409 and json.loads(raw)["error"]["code"] == "not_finished"

    quiet = upload(service, [[image_server.url("/photo2.jpg")]])  # no webhook anywhere
    service.wait_final(quiet)
    assert service.status(quiet)["webhook"] is None
    assert deliveries(service, quiet) == []
    code, _, raw = http("POST", f"{service.url}/api/requests/{quiet}/webhooks/redeliver")
    assert code == 409 and json.loads(raw)["error"]["code"] == "no_webhook_event"
    for method, path in (("GET", "webhooks"), ("POST", "webhooks/redeliver")):
        code, _, _ = http(method, f"{service.url}/api/requests/{'0' * 32}/{path}")
        assert code == 404


def test_kill_9_while_pending_then_delivered_once_after_restart(
    tmp_path: Path, image_server: ImageServer
) -> None:
    hook = Receiver(secret=SECRET)  # down while the request finishes
    env = {
        **BASE_ENV,
        "WEBHOOK_URL": hook.url,  # the seed project's name for the global receiver
        "IMGBATCH_WEBHOOK_SCHEDULE": "0.3,0.6,1,2,4,8,16",
    }
    with Service(tmp_path / "data", env=env) as service:
        service.start(workers=1)
        try:
            rid = upload(service, [[image_server.url("/photo1.jpg")]])  # no webhook_url field
            service.wait_final(rid)
            # kill between two failed attempts (the row is pending, no send in flight)
            delivery_when(service, rid, lambda d: d["attempts"] >= 1 and d["status"] == "pending")
            service.kill_worker(service.workers[0])
            hook.start()
            service.start_worker()
            # (60 s: were the kill to land mid-attempt, the claim's lease must expire first)
            delivered = delivery_when(service, rid, lambda d: d["status"] == "delivered", 60)
            (received,) = hook.requests  # once: a delivered row is never due again
            assert received.verified
            assert received.headers["webhook-id"] == delivered["event_id"]
            assert received.json()["data"]["request_id"] == rid
        finally:
            hook.stop()
