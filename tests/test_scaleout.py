"""The scale-out shape: start-up checks, metrics, JSON logs, public storage URLs, sweepers.

Real PostgreSQL, Redis and S3 (moto) on loopback; real `imgbatch` processes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from imgbatch import ledger
from imgbatch.catalogue import ProductRow
from imgbatch.config import Settings
from imgbatch.context import Context
from imgbatch.jobs import sweep_once
from imgbatch.ledger import Image as ImageRow
from imgbatch.ledger import upgrade, utcnow
from imgbatch.queue.huey_queue import TASK_NAME
from support.backends import redis_database, scaleout_env
from support.databases import add_request, postgres_database, query
from support.imageserver import ImageServer
from support.receiver import Receiver
from support.s3server import SCRUBBED_AWS_VARS, S3Server, dummy_s3_env
from support.service import Service, free_port, http

pytestmark = pytest.mark.scaleout


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SCRUBBED_AWS_VARS, "PROMETHEUS_MULTIPROC_DIR"):  # no real AWS; own metrics dir
        monkeypatch.delenv(name, raising=False)


def csv_bytes(urls: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    for i, url in enumerate(urls, start=1):
        writer.writerow([i, f"Product {i}", url])
    return out.getvalue().encode()


@contextlib.contextmanager
def scaleout_service(
    s3: S3Server,
    tmp_path: Path,
    *,
    queue: str = "redis",
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[Service, dict[str, str]]]:
    with scaleout_env(s3, queue=queue) as base:
        full = {**base, **(env or {})}
        service = Service(tmp_path / "data", env=full)
        try:
            service.start(workers=workers, concurrency=2)
            yield service, full
        finally:
            service.stop()


def bucket_and_prefix(env: dict[str, str]) -> tuple[str, str]:
    bucket, _, prefix = env["IMGBATCH_STORAGE_URL"].removeprefix("s3://").partition("/")
    return bucket, prefix


def done_keys(env: dict[str, str], request_id: str) -> list[str]:
    rows = query(
        env["IMGBATCH_DATABASE_URL"],
        "SELECT output_key FROM images WHERE request_id = :r AND status = 'done'",
        r=request_id,
    )
    return sorted(key for (key,) in rows)


def bucket_keys(s3: S3Server, bucket: str, prefix: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


# --- start-up checks -------------------------------------------------------------------


def _missing_bucket_env(s3: S3Server) -> dict[str, str]:
    return {**dummy_s3_env(s3.endpoint_url), "IMGBATCH_STORAGE_URL": "s3://no-such-bucket/imgs"}


CONFIG_ERRORS = {
    "database-unreachable": (
        "serve",
        {"IMGBATCH_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/imgbatch"},
        "IMGBATCH_DATABASE_URL",
    ),
    "database-missing": (
        "worker",
        {"IMGBATCH_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/imgbatch_no_such_db"},
        "IMGBATCH_DATABASE_URL",
    ),
    "redis-unreachable": (
        "serve",
        {"IMGBATCH_QUEUE_URL": "redis://127.0.0.1:1/0"},
        "IMGBATCH_QUEUE_URL",
    ),
    "pg-queue-unreachable": (
        "worker",
        {"IMGBATCH_QUEUE_URL": "postgresql://postgres:s3cret@127.0.0.1:1/imgbatch"},
        "IMGBATCH_QUEUE_URL",
    ),
    "bucket-missing": ("serve", None, "IMGBATCH_STORAGE_URL"),
    "storage-scheme": (
        "worker",
        {"IMGBATCH_STORAGE_URL": "ftp://example/x"},
        "IMGBATCH_STORAGE_URL",
    ),
}


@pytest.mark.parametrize("case", CONFIG_ERRORS)
def test_bad_backend_fails_start_with_one_line(
    case: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    command, env, setting = CONFIG_ERRORS[case]
    if env is None:
        env = _missing_bucket_env(request.getfixturevalue("s3_server"))
    args = ["--port", str(free_port()), "--workers", "0"] if command == "serve" else []
    result = subprocess.run(
        [sys.executable, "-m", "imgbatch", command, *args],
        env={**os.environ, "IMGBATCH_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert output.splitlines() == [output], f"more than one line:\n{output}"
    assert output.startswith(f"imgbatch: configuration error: {setting}") or setting in output
    assert setting in output
    assert "s3cret" not in output


# --- metrics and logs ----------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, headers, raw = http("GET", url)
    assert status == 200, raw
    content_type = {k.lower(): v for k, v in headers.items()}["content-type"]
    assert content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(raw.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_count_work_of_every_process(
    s3_server: S3Server, image_server: ImageServer, tmp_path: Path
) -> None:
    urls = [image_server.url(f"/photo{i}.jpg") for i in range(4)]
    urls += [image_server.url("/nope.jpg"), image_server.url("/not-an-image.jpg")]
    metrics_port = free_port()
    with Receiver() as hook, scaleout_service(s3_server, tmp_path, workers=1) as (service, _env):
        # A second worker process on the same node, serving the node's counters itself.
        service.workers.append(
            service._spawn(
                "worker-m", ["worker", "--concurrency", "2", "--metrics-port", str(metrics_port)]
            )
        )
        status, answer = service.upload(csv_bytes(urls), webhook_url=hook.url)
        assert status == 202, answer
        doc = service.wait_final(answer["request_id"])
        assert doc["status"] == "completed_with_errors"
        hook.wait_for(1)
        deadline = time.monotonic() + 20
        while True:  # the delivery is counted just after the receiver answered
            samples = scrape(service.url + "/metrics")
            if value(samples, "imgbatch_webhook_deliveries_total", result="delivered") == 1:
                break
            assert time.monotonic() < deadline, service.logs()
            time.sleep(0.2)

        processed = "imgbatch_images_processed_total"
        assert value(samples, processed, outcome="done", reason="none") == 4
        assert value(samples, processed, outcome="failed", reason="not_found") == 1
        assert value(samples, processed, outcome="failed", reason="not_an_image") == 1
        seconds = "imgbatch_image_processing_seconds"
        assert value(samples, seconds + "_count", outcome="done") == 4
        assert value(samples, seconds + "_count", outcome="failed") == 2
        assert value(samples, seconds + "_bucket", outcome="done", le="+Inf") == 4
        assert (value(samples, seconds + "_sum", outcome="done") or 0) > 0
        assert (
            value(samples, "imgbatch_requests_finished_total", status="completed_with_errors") == 1
        )
        assert value(samples, "imgbatch_requests", status="completed_with_errors") == 1
        assert value(samples, "imgbatch_requests", status="processing") == 0
        assert value(samples, "imgbatch_images_unfinished", status="pending") == 0
        assert value(samples, "imgbatch_queue_depth") == 0
        assert value(samples, "imgbatch_backend_up", backend="database") == 1
        assert value(samples, "imgbatch_backend_up", backend="queue") == 1

        # The worker's own endpoint shows the same node-wide counters (no ledger gauges).
        node = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert value(node, processed, outcome="done", reason="none") == 4
        assert value(node, "imgbatch_queue_depth") is None

        # A second request adds up; a new worker process keeps the node's counts.
        service.start_worker(concurrency=1)
        status, answer = service.upload(csv_bytes(urls[:3]))
        assert service.wait_final(answer["request_id"])["status"] == "completed"
        samples = scrape(service.url + "/metrics")
        assert value(samples, processed, outcome="done", reason="none") == 7
        assert value(samples, "imgbatch_requests_finished_total", status="completed") == 1
        assert value(samples, "imgbatch_requests", status="completed") == 1


def test_worker_logs_are_json_with_ids(
    s3_server: S3Server, image_server: ImageServer, tmp_path: Path
) -> None:
    urls = [image_server.url("/photo0.jpg"), image_server.url("/nope.jpg")]
    with scaleout_service(s3_server, tmp_path, env={"IMGBATCH_LOG_FORMAT": "json"}) as (service, _):
        status, answer = service.upload(csv_bytes(urls))
        assert status == 202
        request_id = answer["request_id"]
        service.wait_final(request_id)
    entries: dict[str, list[dict[str, Any]]] = {}
    for log in sorted(service.log_dir.glob("*.log")):
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        assert lines, f"{log.name} is empty"
        parsed = []
        for line in lines:
            entry = json.loads(line)  # every line is one JSON object
            assert {"ts", "level", "logger", "msg", "pid"} <= entry.keys(), line
            parsed.append(entry)
        entries[log.stem] = parsed
    worker = entries["worker-0"]
    failed = [e for e in worker if e.get("image_id") is not None]
    assert failed, worker
    assert all(e["request_id"] == request_id and isinstance(e["image_id"], int) for e in failed)
    assert any("not_found" in e["msg"] for e in failed)
    assert any(
        e["msg"].startswith("request finished") and e.get("request_id") == request_id
        for e in worker
    )
    assert any(e.get("request_id") == request_id for e in entries["api"])  # request accepted


# --- storage URLs --------------------------------------------------------------------------


def test_public_storage_urls_point_at_the_bucket(
    s3_server: S3Server, image_server: ImageServer, image_dir: Path, tmp_path: Path
) -> None:
    """Output URLs on the bucket's public URL (no /files/ hop), with PostgreSQL as the queue."""
    urls = [image_server.url(f"/photo{i}.jpg") for i in range(3)]
    with scaleout_env(s3_server, queue="postgresql") as env:
        bucket, prefix = bucket_and_prefix(env)
        public = f"{s3_server.endpoint_url}/{bucket}"
        # What an operator does for public URLs: anonymous read on the objects (or a CDN).
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*",
                }
            ],
        }
        s3_server.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        env = {**env, "IMGBATCH_PUBLIC_STORAGE_BASE_URL": public}
        with Service(tmp_path / "data", env=env) as service:
            service.start(workers=1, concurrency=2)
            status, answer = service.upload(csv_bytes(urls))
            assert status == 202
            request_id = answer["request_id"]
            doc = service.wait_final(request_id)
            assert doc["status"] == "completed", doc
            outputs = [p["output_urls"][0] for p in doc["products"]]
            for index, (source, output) in enumerate(zip(urls, outputs, strict=True), start=1):
                assert output.startswith(f"{public}/{prefix}/{request_id}/{index}/"), output
                code, headers, data = http("GET", output)  # straight from the bucket
                assert code == 200
                assert {k.lower(): v for k, v in headers.items()}["content-type"] == "image/jpeg"
                original = (image_dir / source.rsplit("/", 1)[1]).read_bytes()
                assert len(data) < len(original)
                with Image.open(io.BytesIO(data)) as img, Image.open(io.BytesIO(original)) as src:
                    assert img.size == src.size and img.format == "JPEG"
            keys = done_keys(env, request_id)
            assert [f"{prefix}/{key}" for key in keys] == bucket_keys(
                s3_server, bucket, f"{prefix}/{request_id}/"
            )


# --- sweepers ------------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_sweepers_requeue_each_lost_image_once(database: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        if database == "sqlite":
            db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        else:
            db_url = stack.enter_context(postgres_database())
        queue_url = stack.enter_context(redis_database())
        upgrade(db_url)
        settings = Settings(
            data_dir=tmp_path, database_url=db_url, queue_url=queue_url, stale_pending_seconds=60
        )
        a, b = Context(settings), Context(settings)
        products = [
            ProductRow(
                row=i + 2, serial_number=i + 1, product_name=f"P{i}", urls=(f"https://x/{i}.jpg",)
            )
            for i in range(60)
        ]
        ids = add_request(a.db, products, request_id="r" * 32)
        # 20 claimed by a worker that died (lease expired), 20 whose job the queue lost
        # (pending, enqueued long ago), 20 in good health (pending, just enqueued).
        past = utcnow() - timedelta(minutes=10)
        assert len(ledger.claim_images(a.db, ids[:20], lease_seconds=60)) == 20
        with a.db.session() as session:
            session.execute(
                update(ImageRow).where(ImageRow.id.in_(ids[:20])).values(lease_until=past)
            )
            session.execute(
                update(ImageRow).where(ImageRow.id.in_(ids[20:40])).values(enqueued_at=past)
            )
        lost = set(ids[:40])

        barrier = threading.Barrier(2)
        reports = []

        def sweep(ctx: Context) -> None:
            barrier.wait()
            reports.append(sweep_once(ctx))

        threads = [threading.Thread(target=sweep, args=(ctx,)) for ctx in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(reports) == 2
        assert sum(r.expired for r in reports) == 20
        assert sum(r.stale for r in reports) == 20
        huey = a.queue.huey

        def image_jobs() -> list[list[int]]:
            """The queued image jobs; the sweeper's marks (queue_mark tasks) are not jobs."""
            tasks = [huey.deserialize_task(m) for m in huey.storage.enqueued_items()]
            return [task.args[0] for task in tasks if task.name == TASK_NAME]

        jobs = image_jobs()
        queued = Counter(image_id for job in jobs for image_id in job)
        assert set(queued) == lost
        assert set(queued.values()) == {1}, "an image was re-enqueued twice"
        # A third sweep right after finds nothing more to do: no image job is added (it may
        # send its mark behind them).
        again = sweep_once(b)
        assert (again.expired, again.stale) == (0, 0)
        assert image_jobs() == jobs
        assert a.queue.depth() > len(jobs)  # the sweeper's mark, behind the jobs
