"""A store that is down gives the work back (issue 11, defect 1): images are released with
back-off, never failed for a short outage, and fail for `storage` only after
IMGBATCH_STORAGE_RETRY_SECONDS, with the last error.

Real parts: a SQLite ledger and queue, the moto S3 server (a bucket that is missing, then
created, is the outage), the loopback image server.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from imgbatch import ledger
from imgbatch.catalogue import ProductRow
from imgbatch.config import Settings
from imgbatch.context import Context
from imgbatch.jobs import gate, pipeline, sweep_once
from imgbatch.ledger import Image, upgrade, utcnow
from imgbatch.ledger import statuses as st
from support.databases import add_request, sqlite_url
from support.imageserver import ImageServer
from support.s3server import SCRUBBED_AWS_VARS, S3Server

RID = "s" * 32


@pytest.fixture(autouse=True)
def _fresh_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    gate._GATES.clear()
    for name in SCRUBBED_AWS_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_ctx(tmp_path: Path, s3_server: S3Server) -> Iterator[Callable[..., Context]]:
    made: list[Context] = []

    def make(bucket: str, **overrides: Any) -> Context:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=tmp_path,
            database_url=sqlite_url(tmp_path),
            storage_url=f"s3://{bucket}/imgs",
            s3_endpoint_url=s3_server.endpoint_url,
            s3_region="us-east-1",
            s3_access_key_id="testing",
            s3_secret_access_key="testing",
            allow_private_urls=True,
            fetch_attempts=1,
            **overrides,
        )
        upgrade(settings.resolved_database_url)
        ctx = Context(settings)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.queue.close()
        ctx.db.engine.dispose()


def images(ctx: Context, ids: list[int]) -> list[Image]:
    with ctx.db.session() as session:
        found = {i.id: i for i in session.execute(select(Image).where(Image.id.in_(ids))).scalars()}
    return [found[i] for i in ids]


def queued(ctx: Context) -> list[int]:
    huey = ctx.queue.huey
    tasks = [huey.deserialize_task(m) for m in huey.storage.enqueued_items()]
    return sorted(i for t in tasks if t.name == "process_images" for i in t.args[0])


def counter(name: str, backend: str) -> float:
    return REGISTRY.get_sample_value(name, {"backend": backend}) or 0.0


def new_request(ctx: Context, server: ImageServer, n: int = 3) -> list[int]:
    products = [
        ProductRow(
            row=i + 2, serial_number=i + 1, product_name="P", urls=(server.url(f"photo{i}.jpg"),)
        )
        for i in range(n)
    ]
    return add_request(ctx.db, products, RID)


def test_a_short_storage_outage_fails_no_image(
    make_ctx: Callable[..., Context],
    image_server: ImageServer,
    s3_server: S3Server,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bucket = f"outage-{uuid.uuid4().hex[:10]}"  # missing: S3 answers NoSuchBucket
    ctx = make_ctx(bucket, retry_delay_seconds=0.3, storage_retry_seconds=600)
    ids = new_request(ctx, image_server)
    faults = counter("imgbatch_backend_faults_total", "storage")
    given = counter("imgbatch_images_given_back_total", "storage")

    with caplog.at_level(logging.WARNING):
        assert pipeline.process_images(ctx, ids) == [st.PENDING] * 3
    for row in images(ctx, ids):
        assert row.status == st.PENDING, row.error_message
        assert row.attempts == 0  # the store's fault is not an attempt of the image
        assert row.error_code == "storage" and (row.error_message or "").startswith(
            "could not store"
        )
        assert row.retry_at is not None and row.retry_at > utcnow()
        assert row.fault_kind == "storage" and row.fault_since is not None
        assert row.enqueued_at is None
    # Counted, logged once at WARNING, and this process pauses taking jobs.
    assert counter("imgbatch_backend_faults_total", "storage") == faults + 1
    assert counter("imgbatch_images_given_back_total", "storage") == given + 3
    warnings = [r for r in caplog.records if "storage unavailable" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert gate.process_gate().pause_left() > 0
    # Not claimed again before its delay, even by a duplicate job.
    assert ledger.claim_images(ctx.db, ids, lease_seconds=60) == []
    assert sweep_once(ctx).due == 0 and queued(ctx) == []

    # Still down at the next try: given back again, the wait doubled.
    time.sleep(0.35)
    assert sweep_once(ctx).due == 3 and queued(ctx) == ids
    first_retry = images(ctx, ids)[0]
    with caplog.at_level(logging.WARNING):
        assert pipeline.process_images(ctx, ids) == [st.PENDING] * 3
    again = images(ctx, ids)[0]
    assert again.fault_since == first_retry.fault_since
    assert again.retry_at is not None and first_retry.retry_at is not None
    assert again.retry_at - utcnow() > timedelta(seconds=0.25)
    assert len([r for r in caplog.records if "storage unavailable" in r.getMessage()]) == 1

    # The store comes back: the next tries succeed, every image once, nothing failed.
    s3_server.create_bucket(bucket)
    ctx.queue.flush()
    deadline = time.monotonic() + 10
    while sweep_once(ctx).due == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with caplog.at_level(logging.WARNING):
        assert pipeline.process_images(ctx, queued(ctx)) == [st.DONE] * 3
    done = images(ctx, ids)
    assert [(r.status, r.attempts, r.error_code) for r in done] == [(st.DONE, 1, None)] * 3
    for row in done:
        assert row.output_key is not None and ctx.storage.exists(row.output_key)
    assert ledger.finalize_request(ctx.db, RID) is None  # finalized already, by the job
    with ctx.db.session() as session:
        assert session.get(ledger.Request, RID).status == st.COMPLETED  # type: ignore[union-attr]
    assert gate.process_gate().pause_left() == 0
    assert len([r for r in caplog.records if "storage available again" in r.getMessage()]) == 1


def test_an_image_fails_for_storage_only_after_the_retry_time(
    make_ctx: Callable[..., Context], image_server: ImageServer
) -> None:
    ctx = make_ctx(
        f"never-{uuid.uuid4().hex[:10]}", retry_delay_seconds=0.2, storage_retry_seconds=0.5
    )
    ids = new_request(ctx, image_server, n=1)
    assert pipeline.process_images(ctx, ids) == [st.PENDING]
    time.sleep(0.3)
    assert pipeline.process_images(ctx, ids) == [st.PENDING]  # 0.3 s into 0.5: retried
    (row,) = images(ctx, ids)
    assert row.retry_at is not None and row.fault_since is not None
    assert row.retry_at <= row.fault_since + timedelta(seconds=0.5)  # the last try, at the end
    time.sleep(max(0.0, (row.retry_at - utcnow()).total_seconds()) + 0.05)
    assert pipeline.process_images(ctx, ids) == [st.FAILED]
    (row,) = images(ctx, ids)
    assert (row.status, row.error_code, row.attempts) == (st.FAILED, "storage", 1)
    assert (row.error_message or "").startswith("could not store")  # the last error


def test_the_retry_schedule_doubles_within_bounds_and_ends_at_the_deadline() -> None:
    policy = ledger.RetryPolicy(first_delay=5, max_delay=120, deadline=900)
    now = utcnow()
    since, waits = None, []
    for _ in range(50):
        decision = ledger.decide(now, policy, since)
        if isinstance(decision, ledger.GiveUp):
            break
        waits.append((decision.retry_at - now).total_seconds())
        since, now = decision.since, decision.retry_at
    assert waits[:7] == [5, 5, 10, 20, 40, 80, 120]
    assert waits[-1] == 20 and max(waits) == 120
    assert (now - since).total_seconds() == 900  # the last try is at the deadline, not after
    assert isinstance(decision, ledger.GiveUp)
    # A backend's own hint (Retry-After, a cool-down) is honoured; another kind starts anew.
    later = ledger.decide(now, policy, None, hint=30)
    assert isinstance(later, ledger.GiveBack) and (later.retry_at - now).total_seconds() == 30
    fresh = ledger.decide(now, policy, now - timedelta(hours=1), same_kind=False)
    assert isinstance(fresh, ledger.GiveBack) and fresh.since == now
    assert [ledger.backoff_delay(i, 1, 60) for i in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_the_gate_pauses_a_process_while_a_backend_everything_needs_is_down() -> None:
    settings = Settings(_env_file=None, retry_delay_seconds=1, retry_max_delay_seconds=4)  # type: ignore[call-arg]
    g = gate.BackendGate()
    assert g.pause_left() == 0
    pauses = [g.fault("storage", "down", settings) for _ in range(4)]
    assert pauses == [1, 2, 4, 4]
    assert 3 < g.pause_left() <= 4
    assert g.fault("fetch", "a host cools down", settings) == 0  # concerns some images only
    g.ok("storage")
    assert g.pause_left() == 0
