"""Chaos on the scale-out shape: worker processes killed with kill -9 mid-request lose nothing.

PostgreSQL + Redis + S3 (moto), three worker processes; two are killed (with
all their forked children) at random moments and replaced. The request must
complete with every image done once, one object per image and no orphan in the
bucket, and exactly one completion webhook.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import encode, photo
from support.backends import scaleout_env
from support.databases import query
from support.imageserver import ImageServer
from support.receiver import Receiver
from support.s3server import SCRUBBED_AWS_VARS, S3Server
from support.service import Service, http

pytestmark = pytest.mark.scaleout

ROWS = 150  # two URLs per row: 300 images
SLOW = 0.15  # seconds each fetch takes, so that kills land on work in flight


@pytest.fixture(scope="module")
def small_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    root = tmp_path_factory.mktemp("small")
    for i in range(10):
        (root / f"small{i}.jpg").write_bytes(encode(photo(200, 150, seed=i), "JPEG", quality=92))
    with ImageServer(root) as server:
        yield server


def _progress(service: Service, request_id: str) -> dict[str, int]:
    code, _, raw = http("GET", f"{service.url}/api/status/{request_id}?limit=1")
    assert code == 200, raw
    progress: dict[str, int] = json.loads(raw)["progress"]
    return progress


def test_killed_workers_lose_nothing(
    s3_server: S3Server,
    small_images: ImageServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in SCRUBBED_AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    lines = ["S. No.,Product Name,Input Image Urls"]
    for row in range(ROWS):
        urls = [
            small_images.url(f"/slow?seconds={SLOW}&file=small{(2 * row + k) % 10}.jpg")
            for k in range(2)
        ]
        lines.append(f'{row + 1},Product {row + 1},"{",".join(urls)}"')
    body = ("\n".join(lines) + "\n").encode()
    total = 2 * ROWS
    kill_at = sorted([rng.randrange(30, 100), rng.randrange(130, 200)])

    with Receiver() as hook, scaleout_env(s3_server, queue="redis") as env:
        with Service(tmp_path / "data", env=env) as service:
            service.start(workers=3, concurrency=2)
            started = time.monotonic()
            status, answer = service.upload(body, webhook_url=hook.url)
            assert status == 202, answer
            request_id = answer["request_id"]

            for threshold in kill_at:
                while (progress := _progress(service, request_id))["succeeded"] < threshold:
                    assert time.monotonic() - started < 60, (seed, progress)
                    time.sleep(0.02)
                victim = rng.choice([w for w in service.workers if w.poll() is None])
                service.kill_worker(victim)
                assert progress["pending"] > 0, f"kill landed after the work (seed {seed})"
                service.start_worker(concurrency=2)

            doc = service.wait_final(request_id, timeout=60)
            elapsed = time.monotonic() - started
            assert doc["status"] == "completed", (seed, doc["progress"])
            assert doc["progress"]["succeeded"] == total
            hook.wait_for(1, timeout=20)
            time.sleep(1.5)  # a second (duplicate) webhook would arrive now

        # --- the ledger: every image done once, under its own key --------------------------
        ledger_url = env["IMGBATCH_DATABASE_URL"]
        images = query(
            ledger_url,
            "SELECT status, output_key, attempts FROM images WHERE request_id = :r",
            r=request_id,
        )
        deliveries = query(
            ledger_url,
            "SELECT status, attempts FROM webhook_deliveries WHERE request_id = :r",
            r=request_id,
        )
        assert len(images) == total
        assert {status for status, _, _ in images} == {"done"}
        keys = [key for _, key, _ in images]
        assert len(set(keys)) == total, "two images share an output key"
        assert max(attempts for _, _, attempts in images) > 1, (
            f"no image was in flight in a killed worker (seed {seed})"
        )
        assert [tuple(d) for d in deliveries] == [("delivered", 1)]

        # --- the bucket: one object per image, no orphan -------------------------------------
        bucket, _, prefix = env["IMGBATCH_STORAGE_URL"].removeprefix("s3://").partition("/")
        pages = (
            s3_server.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=bucket, Prefix=f"{prefix}/{request_id}/")
        )
        stored = sorted(item["Key"] for page in pages for item in page.get("Contents", ()))
        assert stored == sorted(f"{prefix}/{key}" for key in keys)

    # --- the webhook: exactly one completion event ----------------------------------------
    received = hook.requests
    assert len(received) == 1, [r.body[:200] for r in received]
    event = json.loads(received[0].body)
    assert request_id in json.dumps(event)
    assert received[0].answered == 200
    assert elapsed < 60, f"took {elapsed:.1f}s"
