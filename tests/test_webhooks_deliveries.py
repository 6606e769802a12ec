"""Webhook deliveries at the ledger level: real SQLite and PostgreSQL, a real loopback receiver.

Requests are written straight into the tables, finalized with the same hook the
pipeline uses, and delivered by `deliver_due` / `run_delivery_loop` through the
real Fetcher to `support.receiver.Receiver`.
"""

from __future__ import annotations

import base64
import itertools
import logging
import multiprocessing
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from standardwebhooks.webhooks import Webhook

from imgbatch import ledger, webhooks
from imgbatch.config import Settings
from imgbatch.context import Context
from imgbatch.errors import ApiError
from imgbatch.ledger import (
    Image,
    Product,
    Request,
    WebhookDelivery,
    dispose_engines,
    upgrade,
    utcnow,
)
from imgbatch.reports import status_document
from imgbatch.webhooks import (
    Outcome,
    completion_event,
    outcome_from_error,
    outcome_from_response,
    parse_retry_after,
    retry_delay,
)
from support.databases import postgres_database, sqlite_url
from support.receiver import Receiver, Reply

SECRET = "whsec_" + base64.b64encode(b"imgbatch-test-key-imgbatch-test!").decode()
BASE = "http://imgbatch.test"


# --- helpers --------------------------------------------------------------------------------------


def settings_for(db_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": db_url,
        "allow_private_urls": True,
        "public_base_url": BASE,
        "webhook_secret": SECRET,
        "webhook_schedule": [0.05, 0.1, 0.2],
        "webhook_timeout": 3.0,
        "webhook_poll_interval": 0.02,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def open_ctx(db_url: str, data_dir: Path, **overrides: Any) -> Context:
    return Context(settings_for(db_url, data_dir, **overrides))


def close_ctx(ctx: Context) -> None:
    if "fetcher" in ctx.__dict__:
        ctx.fetcher.close()


@pytest.fixture
def make_ctx(tmp_path: Path) -> Iterator[Callable[..., Context]]:
    """Contexts on one migrated SQLite ledger, each with its own settings."""
    url = sqlite_url(tmp_path)
    upgrade(url)
    made: list[Context] = []

    def make(**overrides: Any) -> Context:
        ctx = open_ctx(url, tmp_path, **overrides)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        close_ctx(ctx)
    dispose_engines()


@pytest.fixture
def ctx(make_ctx: Callable[..., Context]) -> Context:
    return make_ctx()


def add_request(
    ctx: Context,
    *,
    webhook_url: str | None = None,
    done: int = 2,
    failed: int = 0,
    pending: int = 0,
) -> tuple[str, list[int]]:
    """A processing request with one product and images in the given states; (id, image ids)."""
    request_id = uuid.uuid4().hex
    now = utcnow()
    states = ["done"] * done + ["failed"] * failed + ["processing"] * pending
    with ctx.db.session() as session:
        session.add(
            Request(
                id=request_id,
                status="processing",
                quality=50,
                output_format="keep",
                webhook_url=webhook_url,
                # as an open-mode upload with a webhook_url gets: its own signing secret
                webhook_secret=SECRET if webhook_url else None,
                product_count=1,
                image_count=len(states),
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
        product = Product(request_id=request_id, position=0, row=2, serial_number=1, name="p")
        session.add(product)
        session.flush()
        images = [
            Image(
                request_id=request_id,
                product_id=product.id,
                position=i,
                input_url=f"http://img.test/{i}.jpg",
                status=state,
                attempts=1,
            )
            for i, state in enumerate(states)
        ]
        session.add_all(images)
        session.flush()
        return request_id, [image.id for image in images]


def finalize(ctx: Context, request_id: str) -> str | None:
    """What `pipeline.finalize` does: finalize, and the winner creates the event."""

    def hook(session: Any, request: Request) -> None:
        webhooks.create_completion_delivery(session, request, ctx.settings)

    return ledger.finalize_request(ctx.db, request_id, on_finalized=hook)


def finished(ctx: Context, webhook_url: str | None, **images: int) -> str:
    request_id, _ = add_request(ctx, webhook_url=webhook_url, **images)
    assert finalize(ctx, request_id) is not None
    return request_id


def delivery_of(ctx: Context, request_id: str) -> WebhookDelivery | None:
    with ctx.db.session() as session:
        return session.execute(
            select(WebhookDelivery).where(WebhookDelivery.request_id == request_id)
        ).scalar_one_or_none()


def deliver_until(
    ctx: Context, request_id: str, status: str, timeout: float = 15.0
) -> WebhookDelivery:
    """Run delivery passes until the request's delivery reaches `status`."""
    deadline = time.monotonic() + timeout
    while True:
        webhooks.deliver_due(ctx)
        delivery = delivery_of(ctx, request_id)
        assert delivery is not None
        if delivery.status == status:
            return delivery
        if time.monotonic() > deadline:
            raise AssertionError(f"delivery is {delivery.status}: {delivery.last_error}")
        time.sleep(0.01)


def history(ctx: Context, request_id: str) -> list[dict[str, Any]]:
    (item,) = webhooks.list_deliveries(ctx, request_id)
    return item["attempt_history"]


def verify(received: Any) -> dict[str, Any]:
    return Webhook(SECRET).verify(received.body, received.headers)


# --- pure rules -----------------------------------------------------------------------------------


NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SAVINGS = {
    "images": 2,
    "bytes_in": 3000,
    "bytes_out": 1000,
    "saved_bytes": 2000,
    "saved_percent": 66.7,
}


def test_completion_event_is_small_and_absolute() -> None:
    body = completion_event(
        request_id="abc",
        status="completed_with_errors",
        progress={"total": 3, "succeeded": 2, "failed": 1, "pending": 0, "percent": 100.0},
        savings=SAVINGS,
        created_at=NOW,
        completed_at=NOW + timedelta(seconds=5),
        base_url=BASE,
        now=NOW + timedelta(seconds=5),
    )
    assert len(body) < 700
    import json

    event = json.loads(body)
    assert event["type"] == "request.completed"
    assert event["timestamp"] == "2025-01-01T12:00:05.000Z"
    assert event["data"] == {
        "request_id": "abc",
        "status": "completed_with_errors",
        "progress": {"total": 3, "succeeded": 2, "failed": 1, "pending": 0, "percent": 100.0},
        "savings": SAVINGS,
        "output_csv_url": f"{BASE}/api/requests/abc/output.csv",
        "status_url": f"{BASE}/api/status/abc",
        "created_at": "2025-01-01T12:00:00.000Z",
        "completed_at": "2025-01-01T12:00:05.000Z",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        (formatdate((NOW + timedelta(seconds=90)).timestamp(), usegmt=True), 90.0),
        (formatdate((NOW - timedelta(seconds=90)).timestamp(), usegmt=True), 0.0),
        ("soon", None),
        ("-5", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_outcomes() -> None:
    assert outcome_from_response(204, {}, NOW).delivered
    gone = outcome_from_response(410, {}, NOW)
    assert gone.permanent and not gone.delivered
    moved = outcome_from_response(302, {"Location": "http://elsewhere.test/"}, NOW)
    assert not moved.delivered and not moved.permanent
    assert "not followed" in (moved.error or "") and "elsewhere.test" in (moved.error or "")
    busy = outcome_from_response(503, {"retry-after": "12"}, NOW)
    assert (busy.retry_after, busy.permanent) == (12.0, False)
    assert outcome_from_error("blocked_address", "loopback").permanent
    assert outcome_from_error("bad_url", "no host").permanent
    assert not outcome_from_error("timeout", "read timeout").permanent


def test_retry_delay_follows_the_schedule_with_jitter_then_gives_up() -> None:
    schedule = [5.0, 30.0, 120.0]
    failed = Outcome(delivered=False, status_code=500, error="HTTP 500")
    rng = random.Random(1)
    for attempt, step in enumerate(schedule, start=1):
        delays = [retry_delay(attempt, failed, schedule, rng) for _ in range(200)]
        assert all(d is not None and 0.8 * step <= d <= 1.2 * step for d in delays)
        assert len(set(delays)) > 100  # jittered, not fixed
    assert retry_delay(len(schedule) + 1, failed, schedule, rng) is None
    assert retry_delay(1, Outcome(delivered=True, status_code=200), schedule) is None
    gone = Outcome(delivered=False, status_code=410, permanent=True)
    assert retry_delay(1, gone, schedule) is None


def test_retry_after_replaces_the_step_but_is_capped() -> None:
    schedule = [5.0, 30.0, 120.0]
    assert retry_delay(1, Outcome(False, 503, "x", retry_after=60.0), schedule) == 60.0
    assert retry_delay(1, Outcome(False, 503, "x", retry_after=86400.0), schedule) == 120.0
    assert retry_delay(3, Outcome(False, 503, "x", retry_after=1.0), schedule) == 1.0
    assert retry_delay(4, Outcome(False, 503, "x", retry_after=1.0), schedule) is None


# --- creating the event ---------------------------------------------------------------------------


def test_signed_event_reaches_a_verifying_receiver_once(ctx: Context) -> None:
    with Receiver(secret=SECRET) as hook:
        request_id = finished(ctx, hook.url, done=2, failed=1)
        assert webhooks.deliver_due(ctx) == 1
        (received,) = hook.wait_for(1)
        assert received.verified is True
        event = verify(received)
        assert event["type"] == "request.completed"
        data = event["data"]
        assert data["request_id"] == request_id
        assert data["status"] == "completed_with_errors"
        assert data["progress"] == {
            "total": 3,
            "succeeded": 2,
            "failed": 1,
            "pending": 0,
            "cancelled": 0,
            "percent": 100.0,
        }
        assert data["output_csv_url"] == f"{BASE}/api/requests/{request_id}/output.csv"
        assert data["status_url"] == f"{BASE}/api/status/{request_id}"
        assert data["completed_at"] and data["created_at"]
        assert received.headers["content-type"] == "application/json"
        assert received.headers["user-agent"].startswith("imgbatch/")
        assert received.headers["webhook-id"].startswith("msg_")
        assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 30

        delivery = delivery_of(ctx, request_id)
        assert delivery is not None
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
            "delivered",
            1,
            200,
        )
        assert delivery.delivered_at is not None and delivery.last_error is None
        assert delivery.event_id == received.headers["webhook-id"]
        assert webhooks.deliver_due(ctx) == 0  # nothing left to send
        assert len(hook.requests) == 1
        (attempt,) = history(ctx, request_id)
        assert attempt["status_code"] == 200 and attempt["duration_ms"] is not None


def test_no_webhook_url_means_no_event(ctx: Context) -> None:
    request_id = finished(ctx, None)
    assert delivery_of(ctx, request_id) is None
    assert webhooks.list_deliveries(ctx, request_id) == []
    with ctx.db.session() as session:
        request = session.get(Request, request_id)
        assert request is not None
        assert webhooks.webhook_summary(session, request) is None
    assert status_document(ctx, request)["webhook"] is None


def test_request_url_wins_over_the_global_one(make_ctx: Callable[..., Context]) -> None:
    with Receiver() as own, Receiver() as global_hook:
        ctx = make_ctx(webhook_url=global_hook.url)
        first = finished(ctx, own.url)
        second = finished(ctx, None)
        assert webhooks.deliver_due(ctx) == 2
        assert [r.json()["data"]["request_id"] for r in own.wait_for(1)] == [first]
        assert [r.json()["data"]["request_id"] for r in global_hook.wait_for(1)] == [second]


def test_unfinished_request_creates_no_event(ctx: Context) -> None:
    request_id, _ = add_request(ctx, webhook_url="http://127.0.0.1:9/hook", done=1, pending=1)
    assert finalize(ctx, request_id) is None
    assert delivery_of(ctx, request_id) is None


def test_the_unique_constraint_holds(ctx: Context) -> None:
    request_id = finished(ctx, "http://127.0.0.1:9/hook")
    with pytest.raises(IntegrityError), ctx.db.session() as session:
        session.add(
            WebhookDelivery(
                event_id=webhooks.new_event_id(),
                request_id=request_id,
                event_type="request.completed",
                url="http://127.0.0.1:9/other",
                payload="{}",
                status="pending",
                attempts=0,
            )
        )
    with ctx.db.session() as session:
        count = session.execute(
            select(WebhookDelivery.id).where(WebhookDelivery.request_id == request_id)
        ).all()
    assert len(count) == 1


# --- retrying -------------------------------------------------------------------------------------


def test_500_twice_then_200_is_three_attempts_with_one_webhook_id(ctx: Context) -> None:
    with Receiver([500, 500, 200], secret=SECRET) as hook:
        request_id = finished(ctx, hook.url)
        delivery = deliver_until(ctx, request_id, "delivered")
        received = hook.requests
        assert len(received) == 3
        assert {r.headers["webhook-id"] for r in received} == {delivery.event_id}
        assert len({r.body for r in received}) == 1  # the same event, re-signed per attempt
        assert all(r.verified for r in received)
        assert delivery.attempts == 3
        assert [a["status_code"] for a in history(ctx, request_id)] == [500, 500, 200]
        gaps = [b.at - a.at for a, b in itertools.pairwise(received)]
        assert gaps[0] >= 0.05 * 0.8 and gaps[1] >= 0.1 * 0.8  # the schedule, jittered


def test_schedule_exhausted_means_failed(make_ctx: Callable[..., Context]) -> None:
    ctx = make_ctx(webhook_schedule=[0.01, 0.01])
    with Receiver(default=503) as hook:
        request_id = finished(ctx, hook.url)
        delivery = deliver_until(ctx, request_id, "failed")
        assert delivery.attempts == 3 and len(hook.requests) == 3
        assert (delivery.last_status_code, delivery.last_error) == (503, "HTTP 503")
        assert delivery.next_attempt_at is None


def test_receiver_down_then_up_is_delivered(ctx: Context) -> None:
    hook = Receiver()  # not started: connection refused
    try:
        request_id = finished(ctx, hook.url)
        assert webhooks.deliver_due(ctx) == 1
        delivery = delivery_of(ctx, request_id)
        assert delivery is not None and delivery.status == "pending"
        assert delivery.last_status_code is None
        assert "upstream" in (delivery.last_error or "")
        hook.start()
        delivery = deliver_until(ctx, request_id, "delivered")
        assert len(hook.requests) == 1
        assert delivery.attempts == 2
    finally:
        hook.stop()


def test_410_gone_stops_at_once(ctx: Context) -> None:
    with Receiver([410]) as hook:
        request_id = finished(ctx, hook.url)
        assert webhooks.deliver_due(ctx) == 1
        delivery = delivery_of(ctx, request_id)
        assert delivery is not None
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 1, 410)
        time.sleep(0.3)  # longer than the whole schedule: a retry would be due by now
        assert webhooks.deliver_due(ctx) == 0
        assert len(hook.requests) == 1


def test_redirect_is_a_failure_and_not_followed(ctx: Context) -> None:
    with (
        Receiver() as target,
        Receiver([Reply(302, {"Location": target.url})], default=200) as hook,
    ):
        request_id = finished(ctx, hook.url)
        assert webhooks.deliver_due(ctx) == 1
        delivery = delivery_of(ctx, request_id)
        assert delivery is not None
        assert (delivery.status, delivery.last_status_code) == ("pending", 302)
        assert "not followed" in (delivery.last_error or "")
        assert target.requests == []
        deliver_until(ctx, request_id, "delivered")  # the retry goes to the same URL
        assert target.requests == [] and len(hook.requests) == 2


def test_retry_after_seconds_is_honoured(make_ctx: Callable[..., Context]) -> None:
    ctx = make_ctx(webhook_schedule=[0.05, 2.0])  # the cap is the longest step
    with Receiver([Reply(503, {"Retry-After": "1"}), 200]) as hook:
        request_id = finished(ctx, hook.url)
        deliver_until(ctx, request_id, "delivered")
        first, second = hook.requests
        assert second.at - first.at >= 0.95  # not the 0.05 s schedule step


def test_retry_after_http_date_is_honoured_and_capped(make_ctx: Callable[..., Context]) -> None:
    ctx = make_ctx(webhook_schedule=[0.05, 3.0])
    answers = [Reply(429, {}), Reply(503, {"Retry-After": "86400"})]
    with Receiver(answers) as hook:
        request_id = finished(ctx, hook.url)
        # dated just before the send, so a slow machine's set-up cannot eat into the two seconds
        answers[0].headers["Retry-After"] = formatdate(time.time() + 2, usegmt=True)
        before = utcnow()
        webhooks.deliver_due(ctx)
        delivery = delivery_of(ctx, request_id)
        assert delivery is not None and delivery.next_attempt_at is not None
        wait = (delivery.next_attempt_at - before).total_seconds()
        assert 0.9 <= wait <= 2.5  # the date's second resolution, not the 0.05 s step
        with ctx.db.session() as session:  # skip the wait
            session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))
        before = utcnow()
        webhooks.deliver_due(ctx)
        delivery = delivery_of(ctx, request_id)
        assert delivery is not None and delivery.next_attempt_at is not None
        assert (delivery.next_attempt_at - before).total_seconds() <= 3.1  # capped at 3 s
        assert len(hook.requests) == 2


def test_hanging_receiver_times_out_without_delaying_others(
    make_ctx: Callable[..., Context],
) -> None:
    ctx = make_ctx(webhook_timeout=1.0)
    stop = threading.Event()
    with Receiver([Reply(delay=30)]) as slow, Receiver() as fast:
        slow_request = finished(ctx, slow.url)
        fast_request = finished(ctx, fast.url)
        loop = threading.Thread(target=webhooks.run_delivery_loop, args=(ctx, stop))
        loop.start()
        try:
            slow.wait_for(1, timeout=5)
            fast.wait_for(1, timeout=5)
            deadline = time.monotonic() + 5
            while delivery_of(ctx, fast_request).status != "delivered":  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.01)
            hanging = delivery_of(ctx, slow_request)
            assert hanging is not None and hanging.status == "delivering"  # still stuck meanwhile
            # a request finishing now is sent while the first attempt still hangs
            later = finished(ctx, fast.url)
            fast.wait_for(2, timeout=5)
            assert delivery_of(ctx, slow_request).status == "delivering"  # type: ignore[union-attr]
            deadline = time.monotonic() + 10
            while (d := delivery_of(ctx, slow_request)) is not None and d.status != "delivered":
                assert time.monotonic() < deadline, d.last_error
                time.sleep(0.02)
        finally:
            stop.set()
            loop.join(10)
        first, second = history(ctx, slow_request)
        assert first["status_code"] is None and first["error"].startswith("timeout")
        assert 900 <= first["duration_ms"] < 5000
        assert second["status_code"] == 200
        assert delivery_of(ctx, later).status == "delivered"  # type: ignore[union-attr]


# --- redelivery, leases, races --------------------------------------------------------------------


def test_redeliver_keeps_the_webhook_id_and_adds_an_attempt(ctx: Context) -> None:
    with Receiver(secret=SECRET) as hook:
        request_id = finished(ctx, hook.url)
        deliver_until(ctx, request_id, "delivered")
        queued = webhooks.redeliver(ctx, request_id)
        assert queued["status"] == "pending"
        delivery = deliver_until(ctx, request_id, "delivered")
        first, second = hook.wait_for(2)
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.event_id
        assert first.body == second.body and second.verified
        assert delivery.attempts == 2
        assert [a["status_code"] for a in history(ctx, request_id)] == [200, 200]


def test_redeliver_refusals(ctx: Context) -> None:
    with pytest.raises(ApiError) as info:
        webhooks.redeliver(ctx, "nope")
    assert info.value.status == 404
    unfinished, _ = add_request(ctx, webhook_url="http://127.0.0.1:9/h", done=1, pending=1)
    with pytest.raises(ApiError) as info:
        webhooks.redeliver(ctx, unfinished)
    assert (info.value.status, info.value.code) == (409, "not_finished")
    no_url = finished(ctx, None)
    with pytest.raises(ApiError) as info:
        webhooks.redeliver(ctx, no_url)
    assert (info.value.status, info.value.code) == (409, "no_webhook_event")
    in_flight = finished(ctx, "http://127.0.0.1:9/h")
    (claim,) = webhooks.claim_due(ctx, 10)  # a sender holds it right now
    with pytest.raises(ApiError) as info:
        webhooks.redeliver(ctx, in_flight)
    assert (info.value.status, info.value.code) == (409, "delivery_in_progress")
    assert claim.request_id == in_flight


def test_a_dead_senders_claim_is_taken_over_after_its_lease(ctx: Context) -> None:
    with Receiver() as hook:
        request_id = finished(ctx, hook.url)
        (claim,) = webhooks.claim_due(ctx, 10)  # this "worker" dies without sending
        assert webhooks.deliver_due(ctx) == 0  # leased: nobody else sends it
        with ctx.db.session() as session:
            session.execute(
                update(WebhookDelivery).values(lease_until=utcnow() - timedelta(seconds=1))
            )
        delivery = deliver_until(ctx, request_id, "delivered")
        assert len(hook.requests) == 1 and delivery.attempts == 2
        first, second = history(ctx, request_id)
        assert first["error"].startswith("interrupted") and second["status_code"] == 200
        # the dead sender's late result is not recorded over the new one
        lost = Outcome(delivered=False, status_code=500, error="HTTP 500")
        assert webhooks.record_outcome(ctx, claim, lost, 5) is None
        assert delivery_of(ctx, request_id).status == "delivered"  # type: ignore[union-attr]


def test_private_address_refused_at_send_time(make_ctx: Callable[..., Context]) -> None:
    with Receiver() as hook:
        ctx = make_ctx(allow_private_urls=False, allowed_ports=[80, 443, hook.port])
        request_id = finished(ctx, hook.url)  # e.g. DNS changed since upload
        assert webhooks.deliver_due(ctx) == 1
        delivery = delivery_of(ctx, request_id)
        assert delivery is not None
        assert (delivery.status, delivery.attempts) == ("failed", 1)
        assert (delivery.last_error or "").startswith("blocked_address")
        assert "loopback" in (delivery.last_error or "")
        assert hook.requests == []


def test_unsigned_without_secret_warns_once(
    make_ctx: Callable[..., Context], caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    caplog.set_level(logging.INFO)
    with Receiver() as hook:
        # Without IMGBATCH_WEBHOOK_SECRET the operator's receiver gets unsigned events
        # (an upload's own webhook_url is always signed, with its uploader's secret).
        ctx = make_ctx(webhook_secret=None, webhook_url=hook.url)
        finished(ctx, None)
        finished(ctx, None)
        loop = threading.Thread(target=webhooks.run_delivery_loop, args=(ctx, stop))
        loop.start()
        try:
            received = hook.wait_for(2, timeout=10)
        finally:
            stop.set()
            loop.join(10)
    assert all("webhook-signature" not in r.headers for r in received)
    assert all(r.headers["webhook-id"] for r in received)
    warnings = [r for r in caplog.records if "unsigned" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_the_secret_is_never_logged(
    make_ctx: Callable[..., Context], caplog: pytest.LogCaptureFixture
) -> None:
    ctx = make_ctx()
    caplog.set_level(logging.DEBUG)
    stop = threading.Event()
    with Receiver([500, 200]) as hook:
        finished(ctx, hook.url)
        loop = threading.Thread(target=webhooks.run_delivery_loop, args=(ctx, stop))
        loop.start()
        try:
            hook.wait_for(2, timeout=10)
        finally:
            stop.set()
            loop.join(10)
    assert caplog.records  # the attempts were logged...
    key = SECRET.removeprefix("whsec_")
    assert key not in caplog.text  # ...without the secret


def test_bad_secret_stops_the_loop_and_sends_nothing(
    make_ctx: Callable[..., Context], caplog: pytest.LogCaptureFixture
) -> None:
    ctx = make_ctx(webhook_secret="whsec_")
    with Receiver() as hook:
        request_id = finished(ctx, hook.url)
        webhooks.run_delivery_loop(ctx, threading.Event())  # returns at once
        assert hook.requests == []
    assert delivery_of(ctx, request_id).status == "pending"  # type: ignore[union-attr]
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_status_document_and_summary(make_ctx: Callable[..., Context]) -> None:
    with Receiver() as hook:
        ctx = make_ctx()
        url = hook.url + "?token=s3cret"
        request_id, _ = add_request(ctx, webhook_url=url, done=1, pending=1)
        with ctx.db.session() as session:
            request = session.get(Request, request_id)
        assert request is not None
        waiting = status_document(ctx, request)["webhook"]
        assert waiting == {
            "url": hook.url + "?…",
            "receiver": "upload",
            "status": "waiting",
            "attempts": 0,
        }
        with ctx.db.session() as session:
            session.execute(update(Image).values(status="done"))
        finalize(ctx, request_id)
        deliver_until(ctx, request_id, "delivered")
        assert hook.requests[0].path == "/hook?token=s3cret"  # sent to the full URL
        with ctx.db.session() as session:
            request = session.get(Request, request_id)
        assert request is not None
        doc = status_document(ctx, request)
        assert doc["webhook"] == {
            "url": hook.url + "?…",
            "receiver": "upload",
            "status": "delivered",
            "attempts": 1,
        }
        (listed,) = webhooks.list_deliveries(ctx, request_id)
        assert "s3cret" not in str(listed)
        assert listed["status"] == "delivered" and listed["last_status_code"] == 200


# --- many processes, one ledger -------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        upgrade(url)
        yield url
        dispose_engines()
        return
    with postgres_database() as url:
        upgrade(url)
        yield url


def _finalizer_process(
    db_url: str, data_dir: str, rounds: list[tuple[str, int]], barrier: Any, results: Any
) -> None:
    """One 'worker': per round, finish its image of the request at the barrier, then finalize."""
    ctx = open_ctx(db_url, Path(data_dir), webhook_url="http://127.0.0.1:9/hook")
    for request_id, image_id in rounds:
        barrier.wait(30)
        with ctx.db.session() as session:
            session.execute(update(Image).where(Image.id == image_id).values(status="done"))
        results.put((request_id, finalize(ctx, request_id)))


def test_two_workers_finishing_the_last_images_create_one_event(
    db_url: str, tmp_path: Path
) -> None:
    ctx = open_ctx(db_url, tmp_path, webhook_url="http://127.0.0.1:9/hook")
    rounds = [add_request(ctx, done=0, pending=2) for _ in range(12)]
    mp = multiprocessing.get_context("spawn")
    barrier, results = mp.Barrier(2), mp.Queue()
    procs = [
        mp.Process(
            target=_finalizer_process,
            args=(db_url, str(tmp_path), [(rid, ids[i]) for rid, ids in rounds], barrier, results),
        )
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in range(2 * len(rounds))]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    for request_id, _ in rounds:
        wins = [final for rid, final in outcomes if rid == request_id and final is not None]
        assert wins == ["completed"]
        with ctx.db.session() as session:
            rows = session.execute(
                select(WebhookDelivery).where(WebhookDelivery.request_id == request_id)
            ).all()
        assert len(rows) == 1
    close_ctx(ctx)


def _sender_process(db_url: str, data_dir: str, barrier: Any) -> None:
    ctx = open_ctx(db_url, Path(data_dir))
    barrier.wait(30)
    for _ in range(5):
        webhooks.deliver_due(ctx)
    close_ctx(ctx)


def test_many_sender_processes_never_send_an_attempt_twice(db_url: str, tmp_path: Path) -> None:
    ctx = open_ctx(db_url, tmp_path)
    with Receiver() as hook:
        request_ids = [finished(ctx, hook.url) for _ in range(16)]
        mp = multiprocessing.get_context("spawn")
        barrier = mp.Barrier(3)
        procs = [
            mp.Process(target=_sender_process, args=(db_url, str(tmp_path), barrier))
            for _ in range(3)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
            assert proc.exitcode == 0
        received = hook.requests
    ids = [r.headers["webhook-id"] for r in received]
    assert len(ids) == len(set(ids)) == len(request_ids)
    for request_id in request_ids:
        delivery = delivery_of(ctx, request_id)
        assert delivery is not None
        assert (delivery.status, delivery.attempts) == ("delivered", 1)
    close_ctx(ctx)


def test_receivers_and_their_pauses_are_pure_rules() -> None:
    from imgbatch.webhooks.rules import (
        Outcome,
        counts_against_receiver,
        receiver_of,
        receiver_pause,
    )

    assert receiver_of("https://Hooks.Example/a?x=1") == "https://hooks.example:443"
    assert receiver_of("http://127.0.0.1:8080/h") == "http://127.0.0.1:8080"
    assert [receiver_pause(n) for n in (1, 2)] == [None, None]
    assert [receiver_pause(n) for n in (3, 4, 5, 20)] == [30, 60, 120, 3600]
    assert receiver_pause(3, retry_after=600) == 600
    assert counts_against_receiver(Outcome(False, None, "timeout: ..."))
    assert counts_against_receiver(Outcome(False, 503, "HTTP 503"))
    assert counts_against_receiver(Outcome(False, 429, "HTTP 429"))
    assert not counts_against_receiver(Outcome(False, 400, "HTTP 400"))  # it answers
    assert not counts_against_receiver(Outcome(True, 200))
    assert not counts_against_receiver(Outcome(False, None, "blocked_address", permanent=True))
