"""Each image has a CPU budget, and its lease lives as long as its worker works on it.

A 1.3 MB progressive JPEG held a worker for hours: the lease ran out mid-decode, the
sweeper handed the image to another worker, and attempts 1-3 ran at once. Now a guard
thread in each worker process renews the job's leases while it runs, and an image past
`IMGBATCH_MAX_IMAGE_SECONDS` of CPU fails `too_complex` and its process is replaced.
The slow image here is a 48 MP progressive JPEG with 100 scans (within the scan limit):
about 2 s of CPU to decode on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import encode, photo
from support.databases import query
from support.imageserver import ImageServer
from support.jpegs import many_scan_jpeg
from support.service import Service, products_csv


@pytest.fixture(scope="module")
def slow_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    root = tmp_path_factory.mktemp("slow-images")
    (root / "slow.jpg").write_bytes(many_scan_jpeg(8000, 6000, 100))
    (root / "good.jpg").write_bytes(encode(photo(320, 240, seed=3), "JPEG", quality=90))
    with ImageServer(root) as server:
        yield server


def _start(tmp_path: Path, **env: str) -> Service:
    service = Service(
        tmp_path / "data",
        {"IMGBATCH_UPLOAD_RATE_LIMIT": "0", "IMGBATCH_SWEEP_INTERVAL": "0.5", **env},
    )
    service.start(workers=1, concurrency=2)
    return service


def _children(service: Service) -> set[int]:
    """Pids of the worker's forked processes (its job processes and Huey's scheduler)."""
    (worker,) = service.workers
    assert worker.poll() is None, service.logs()
    tasks = Path(f"/proc/{worker.pid}/task").iterdir()
    return {int(pid) for task in tasks for pid in (task / "children").read_text().split()}


def _attempts(service: Service, request_id: str) -> dict[str, int]:
    url = f"sqlite:///{service.data_dir / 'imgbatch.db'}"
    rows = query(url, "SELECT input_url, attempts FROM images WHERE request_id = :r", r=request_id)
    return {url.rsplit("/", 1)[1]: attempts for url, attempts in rows}


def _wait_for(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_an_image_over_its_cpu_budget_fails_too_complex_and_its_process_is_replaced(
    tmp_path: Path, slow_images: ImageServer
) -> None:
    with _start(tmp_path, IMGBATCH_MAX_IMAGE_SECONDS="0.5", IMGBATCH_LEASE_SECONDS="2") as svc:
        _wait_for(lambda: len(_children(svc)) >= 3)  # two job processes and the scheduler
        before = _children(svc)
        rows = [("Slow", [slow_images.url("slow.jpg")]), ("Good", [slow_images.url("good.jpg")])]
        status, answer = svc.upload(products_csv(rows))
        assert status == 202, answer
        doc = svc.wait_final(answer["request_id"], timeout=60)
        by_name = {p["product_name"]: p for p in doc["products"]}
        assert by_name["Good"]["status"] == "completed"
        assert by_name["Slow"]["status"] == "failed"
        (error,) = by_name["Slow"]["errors"]
        assert error["code"] == "too_complex", error
        assert "0.5 s of CPU" in error["message"]
        assert _attempts(svc, answer["request_id"])["slow.jpg"] == 1
        # The process that was decoding it is gone, and a fresh one took its place.
        _wait_for(lambda: len(_children(svc)) == len(before) and _children(svc) != before)
        assert len(before - _children(svc)) == 1
        # The replacement works: another request completes.
        status, answer = svc.upload(products_csv([("After", [slow_images.url("good.jpg")])]))
        assert svc.wait_final(answer["request_id"])["status"] == "completed"


def test_a_lease_outlives_a_decode_longer_than_the_lease(
    tmp_path: Path, slow_images: ImageServer
) -> None:
    # A 1 s lease and about 2 s of decoding: the guard renews the lease meanwhile, so the
    # sweeper (every 0.5 s) never hands the image to the second worker process.
    with _start(tmp_path, IMGBATCH_MAX_IMAGE_SECONDS="60", IMGBATCH_LEASE_SECONDS="1") as svc:
        status, answer = svc.upload(products_csv([("Slow", [slow_images.url("slow.jpg")])]))
        assert status == 202, answer
        doc = svc.wait_final(answer["request_id"], timeout=60)
        assert doc["status"] == "completed", doc["products"]
        assert _attempts(svc, answer["request_id"]) == {"slow.jpg": 1}
        assert "lease lost" not in svc.logs()
