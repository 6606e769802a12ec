"""Chaos on the scale-out shape (issue 11): every fault an operator meets, mid-request.

PostgreSQL and Redis that this test owns (its own cluster and server, on their own ports:
never the shared ones), S3 on a moto server of its own, one API and three workers, a
loopback image host and a webhook receiver. One request of a few hundred images per
fault: the queue flushed; the queue killed and restarted; the database crashed
(`pg_ctl stop -m immediate`) and started; the S3 server paused (SIGSTOP) and resumed; two
workers killed with `kill -9`. Each request must end `completed` with every image done
once, every object in the bucket, exactly one webhook event; at the end no process is
left and the database log holds no deadlock. Recovery times are printed (pytest -s) and
kept in the README's operations section.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import encode, photo
from support.chaos import OwnPostgres, OwnRedis
from support.databases import query
from support.imageserver import ImageServer
from support.receiver import Receiver
from support.s3server import SCRUBBED_AWS_VARS, S3Server, dummy_s3_env, start_s3_server
from support.service import Service, http

pytestmark = pytest.mark.scaleout

ROWS = 150  # two URLs per row: 300 images per request
SLOW = 0.05  # seconds each fetch takes, so that a fault lands on work in flight
OUTAGE = 6.0  # seconds each backend stays down


@pytest.fixture(scope="module")
def small_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    root = tmp_path_factory.mktemp("small")
    for i in range(10):
        (root / f"small{i}.jpg").write_bytes(encode(photo(200, 150, seed=i), "JPEG", quality=92))
    with ImageServer(root) as server:
        yield server


class Stack:
    """The deployment and the backends it runs on, all owned by this test."""

    def __init__(self, pg: OwnPostgres, queue: OwnRedis, s3: S3Server, data: Path) -> None:
        self.pg, self.queue, self.s3 = pg, queue, s3
        self.bucket = f"chaos-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(self.bucket)
        env = {
            **dummy_s3_env(s3.endpoint_url),
            "IMGBATCH_DATABASE_URL": pg.url,
            "IMGBATCH_QUEUE_URL": queue.url,
            "IMGBATCH_STORAGE_URL": f"s3://{self.bucket}/imgs",
            "IMGBATCH_SWEEP_INTERVAL": "1",
            "IMGBATCH_LEASE_SECONDS": "6",
            "IMGBATCH_STALE_PENDING_SECONDS": "3",
            "IMGBATCH_RETRY_DELAY_SECONDS": "0.5",
            "IMGBATCH_RETRY_MAX_DELAY_SECONDS": "4",
        }
        self.service = Service(data, env=env)
        self.groups: list[int] = []

    def start(self) -> None:
        self.service.start(workers=3, concurrency=2)
        self.groups = [p.pid for p in (self.service.api, *self.service.workers) if p]

    def start_worker(self) -> None:
        self.groups.append(self.service.start_worker(concurrency=2).pid)


def progress(stack: Stack, request_id: str) -> dict[str, int] | None:
    """The request's progress, or None while the API answers 503 (its database is down)."""
    try:
        code, _, raw = http(
            "GET", f"{stack.service.url}/api/status/{request_id}?limit=1", timeout=5
        )
    except OSError:
        return None
    if code == 503:
        return None
    assert code == 200, raw
    answer: dict[str, int] = json.loads(raw)["progress"]
    return answer


def csv_body(server: ImageServer, tag: str) -> bytes:
    lines = ["S. No.,Product Name,Input Image Urls"]
    for row in range(ROWS):
        urls = [
            # distinct URLs: each image is downloaded and stored on its own (issue 16 shares
            # one download among the positions of a repeated URL)
            server.url(f"/slow?seconds={SLOW}&file=small{(2 * row + k) % 10}.jpg&{tag}={row}-{k}")
            for k in range(2)
        ]
        lines.append(f'{row + 1},Product {row + 1},"{",".join(urls)}"')
    return ("\n".join(lines) + "\n").encode()


def flush_queue(stack: Stack) -> Callable[[], None]:
    stack.queue.flush()
    return lambda: None


def restart_queue(stack: Stack) -> Callable[[], None]:
    stack.queue.kill()
    return stack.queue.start


def crash_database(stack: Stack) -> Callable[[], None]:
    stack.pg.crash()
    return stack.pg.start


def pause_storage(stack: Stack) -> Callable[[], None]:
    os.kill(stack.s3.process.pid, signal.SIGSTOP)
    return lambda: os.kill(stack.s3.process.pid, signal.SIGCONT)


def kill_two_workers(stack: Stack) -> Callable[[], None]:
    for victim in stack.service.workers[:2]:
        stack.service.kill_worker(victim)
    stack.service.workers = stack.service.workers[2:]

    def replace() -> None:
        stack.start_worker()
        stack.start_worker()

    return replace


FAULTS: dict[str, Callable[[Stack], Callable[[], None]]] = {
    "queue flushed": flush_queue,
    "queue killed and restarted": restart_queue,
    "database crashed": crash_database,
    "S3 paused": pause_storage,
    "two workers kill -9": kill_two_workers,
}


def run_with_fault(
    stack: Stack, hook: Receiver, images: ImageServer, name: str
) -> dict[str, float]:
    """One request with one fault mid-run; returns its timings (seconds)."""
    total = 2 * ROWS
    started = time.monotonic()
    status, answer = stack.service.upload(csv_body(images, name.split()[0]), webhook_url=hook.url)
    assert status == 202, answer
    request_id = answer["request_id"]
    while ((p := progress(stack, request_id)) or {}).get("succeeded", 0) < total // 5:
        assert time.monotonic() - started < 60, (name, p)
        time.sleep(0.02)
    assert p is not None and p["succeeded"] < total, f"{name}: the fault came after the work"
    fault_at = time.monotonic()
    repair = FAULTS[name](stack)
    if name not in ("queue flushed", "two workers kill -9"):
        time.sleep(OUTAGE)
    repair()
    repaired_at = time.monotonic()
    done_before = None
    while True:
        p = progress(stack, request_id)
        if p is not None and done_before is None:
            done_before = p["succeeded"]
        if p is not None and p["succeeded"] + p["failed"] == total:
            break
        assert time.monotonic() - repaired_at < 90, (
            f"{name}: not finished: {p}\n{stack.service.logs()}"
        )
        time.sleep(0.1)
    finished_at = time.monotonic()
    doc = stack.service.wait_final(request_id, timeout=30)
    assert doc["status"] == "completed", (name, doc["progress"])
    assert doc["progress"]["succeeded"] == total

    # The ledger: every image done once, each under its own key.
    rows = query(
        stack.pg.url,
        "SELECT status, output_key FROM images WHERE request_id = :r",
        r=request_id,
    )
    assert len(rows) == total and {s for s, _ in rows} == {"done"}
    keys = sorted(k for _, k in rows)
    assert len(set(keys)) == total
    # The bucket: every object present.
    pages = (
        stack.s3.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=stack.bucket, Prefix=f"imgs/{request_id}/")
    )
    stored = sorted(item["Key"] for page in pages for item in page.get("Contents", ()))
    assert stored == [f"imgs/{key}" for key in keys], name
    # The webhook: exactly one event for this request.
    deadline = time.monotonic() + 20
    while not [r for r in hook.requests if request_id in r.body.decode()]:
        assert time.monotonic() < deadline, f"{name}: no webhook"
        time.sleep(0.1)
    time.sleep(1.0)  # a duplicate would arrive now
    events = [r for r in hook.requests if request_id in r.body.decode()]
    assert len(events) == 1, (name, len(events))
    return {
        "fault": repaired_at - fault_at,
        "recovered": finished_at - repaired_at,
        "total": finished_at - started,
    }


def test_every_fault_loses_nothing_and_leaves_nothing(
    small_images: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*SCRUBBED_AWS_VARS, "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(name, raising=False)
    figures: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack_of:
        pg = stack_of.enter_context(OwnPostgres())
        queue = stack_of.enter_context(OwnRedis())
        s3 = stack_of.enter_context(start_s3_server())
        hook = stack_of.enter_context(Receiver())
        stack = Stack(pg, queue, s3, tmp_path / "data")
        try:
            stack.start()
            for name in FAULTS:
                figures[name] = run_with_fault(stack, hook, small_images, name)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(s3.process.pid, signal.SIGCONT)
            stack.service.stop()
        # No process left: every process group the test started is empty.
        for group in stack.groups:
            deadline = time.monotonic() + 10
            while True:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    break
                assert time.monotonic() < deadline, f"process group {group} still alive"
                time.sleep(0.1)
        log = pg.log_text()
        assert "deadlock detected" not in log, log[-3000:]
    print("\nchaos recovery (seconds): fault held / repaired → finished / whole request")
    for name, f in figures.items():
        print(f"  {name:28} {f['fault']:5.1f}  {f['recovered']:5.1f}  {f['total']:5.1f}")
