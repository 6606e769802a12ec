"""Managing requests through the real service, embedded and scale-out: cancel and retry.

Real API and worker processes, a real loopback image host (slow and flaky routes), a real
signed-webhook receiver; on scale-out, PostgreSQL + Redis + S3 (moto).
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from support.backends import scaleout_env
from support.imageserver import ImageServer
from support.receiver import Receiver
from support.s3server import SCRUBBED_AWS_VARS
from support.service import Service, http, products_csv

SECRET = "whsec_" + base64.b64encode(b"lifecycle-webhook-secret-012345").decode()
ENV = {
    "IMGBATCH_WEBHOOK_SECRET": SECRET,
    "IMGBATCH_WEBHOOK_SCHEDULE": "0.2,0.4,0.8",
    "IMGBATCH_WEBHOOK_POLL_INTERVAL": "0.1",
    "IMGBATCH_FETCH_ATTEMPTS": "1",  # a host that answers 503 fails the image at once
}


@pytest.fixture(params=["embedded", pytest.param("scaleout", marks=pytest.mark.scaleout)])
def managed(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Service]:
    with contextlib.ExitStack() as stack:
        env = dict(ENV)
        if request.param == "scaleout":
            for name in SCRUBBED_AWS_VARS:
                monkeypatch.delenv(name, raising=False)
            env |= stack.enter_context(scaleout_env(request.getfixturevalue("s3_server")))
        service = Service(tmp_path / "data", env=env)
        stack.callback(service.stop)
        service.start(workers=1, concurrency=2)
        yield service


@pytest.fixture
def host(image_dir: Path) -> Iterator[ImageServer]:
    """An image host of this test alone: its flaky routes count from zero."""
    with ImageServer(image_dir) as server:
        yield server


def until(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def post(service: Service, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, _, raw = http("POST", service.url + path, body, headers)
    return status, json.loads(raw)


def upload(service: Service, urls: list[str], hook: Receiver) -> str:
    rows = [(f"Product {i}", [url]) for i, url in enumerate(urls, start=1)]
    status, answer = service.upload(products_csv(rows), webhook_url=hook.url)
    assert status == 202, answer
    return str(answer["request_id"])


def events(hook: Receiver, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The first `count` events, verified, as (webhook-id, event)."""
    received = hook.wait_for(count, timeout=60)
    assert all(r.verified for r in received)
    return [(r.headers["webhook-id"], json.loads(r.body)) for r in received]


def test_cancel_mid_run_then_retry(managed: Service, host: ImageServer) -> None:
    urls = [host.url(f"/slow?seconds=0.4&file=photo{i % 6}.jpg&n={i}") for i in range(20)]
    with Receiver(secret=SECRET) as hook:
        request_id = upload(managed, urls, hook)
        until(lambda: managed.status(request_id)["progress"]["succeeded"] >= 2, what="progress")
        status, doc = post(managed, f"/api/requests/{request_id}/cancel")
        assert status == 202, doc
        assert doc["request_id"] == request_id and doc["status"] in ("processing", "cancelled")
        assert doc["progress"]["cancelled"] > 0
        final = managed.wait_final(request_id)
        progress = final["progress"]
        assert final["status"] == "cancelled"
        assert progress["succeeded"] >= 2 and progress["failed"] == 0
        assert progress["succeeded"] + progress["cancelled"] == 20 and progress["cancelled"] > 0
        images = [image for product in final["products"] for image in product["images"]]
        cancelled = [image for image in images if image["status"] == "cancelled"]
        assert len(cancelled) == progress["cancelled"]
        assert all(i["output_url"] is None and i["error"] is None for i in cancelled)
        assert {p["status"] for p in final["products"]} == {"completed", "cancelled"}
        status, again = post(managed, f"/api/requests/{request_id}/cancel")
        assert (status, again["error"]["code"]) == (409, "already_finished")
        code, _, body = http("GET", final["output_csv_url"])  # offered for a cancelled request
        assert code == 200 and body.count(b"\n") == 21
        ((first_id, first),) = events(hook, 1)
        assert first["type"] == "request.completed"
        assert first["data"]["status"] == "cancelled"
        assert first["data"]["progress"] == progress

        status, doc = post(managed, f"/api/requests/{request_id}/retry")
        assert status == 202, doc
        assert doc["status"] == "processing" and doc["progress"]["cancelled"] == 0
        assert doc["completed_at"] is None and doc["output_csv_url"] is None
        final = managed.wait_final(request_id)
        assert final["status"] == "completed"
        assert final["progress"]["succeeded"] == 20
        _, (second_id, second) = events(hook, 2)
        assert second_id != first_id and second["type"] == "request.completed"
        assert second["data"]["status"] == "completed"
        status, _, raw = http("GET", f"{managed.url}/api/requests/{request_id}/webhooks")
        listed = json.loads(raw)["deliveries"]
        assert [(d["run"], d["event_id"]) for d in listed] == [(1, first_id), (2, second_id)]


def test_retry_upstream_failures_after_the_host_recovers(
    managed: Service, host: ImageServer
) -> None:
    urls = [
        host.url("/photo0.jpg"),
        host.url("/photo1.jpg"),
        host.url("/flaky/photo2.jpg?fail=1&status=503"),  # down once, then back
        host.url("/flaky/photo3.jpg?fail=1&status=502"),
    ]
    with Receiver(secret=SECRET) as hook:
        request_id = upload(managed, urls, hook)
        first_doc = managed.wait_final(request_id)
        assert first_doc["status"] == "completed_with_errors"
        codes = [e["code"] for p in first_doc["products"] for e in p["errors"]]
        assert codes == ["upstream", "upstream"]
        ((first_id, first),) = events(hook, 1)
        assert first["data"]["status"] == "completed_with_errors"

        path = f"/api/requests/{request_id}/retry"
        status, refused = post(managed, path, json.dumps({"codes": ["timeout"]}).encode())
        assert (status, refused["error"]["code"]) == (409, "nothing_to_retry")
        status, bad = post(managed, path, b'{"codes": "upstream"}')
        assert (status, bad["error"]["code"]) == (400, "bad_request")

        status, doc = post(managed, path, json.dumps({"codes": ["upstream"]}).encode())
        assert status == 202, doc
        assert doc["status"] == "processing" and doc["progress"]["pending"] == 2
        assert doc["progress"]["succeeded"] == 2 and doc["webhook"]["status"] == "waiting"
        status, running = post(managed, path)
        assert (status, running["error"]["code"]) == (409, "not_finished")

        final = managed.wait_final(request_id)
        assert final["status"] == "completed", final
        assert all(p["errors"] == [] for p in final["products"])
        assert all(p["output_urls"][0] for p in final["products"])
        _, (second_id, second) = events(hook, 2)
        assert second_id != first_id
        assert second["type"] == first["type"] == "request.completed"
        assert second["data"]["status"] == "completed"
        assert second["data"]["progress"]["succeeded"] == 4
        Webhook(SECRET).verify(hook.requests[1].body, hook.requests[1].headers)
        assert len(hook.requests) == 2  # one event per finalization, no more
