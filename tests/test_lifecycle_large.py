"""Cancel, retry and delete of a 50,000-image request through the real service: the API
answers within its budget and the rest finishes in the background (embedded and scale-out).

No worker runs, so every image stays pending until the cancel: the worst case for it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imgbatch.config import Settings
from support.backends import scaleout_env
from support.databases import query
from support.s3server import SCRUBBED_AWS_VARS
from support.service import Service, http, products_csv

IMAGES = 50_000
ANSWER_WITHIN = 2.0  # seconds; measured 0.3-0.8 (README), room for a loaded machine


@pytest.fixture(params=["embedded", pytest.param("scaleout", marks=pytest.mark.scaleout)])
def idle(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Service]:
    with contextlib.ExitStack() as stack:
        env = {"IMGBATCH_MAX_CSV_BYTES": str(64 * 1024 * 1024), "IMGBATCH_LOG_LEVEL": "WARNING"}
        if request.param == "scaleout":
            for name in SCRUBBED_AWS_VARS:
                monkeypatch.delenv(name, raising=False)
            env |= stack.enter_context(scaleout_env(request.getfixturevalue("s3_server")))
        service = Service(tmp_path / "data", env=env)
        stack.callback(service.stop)
        service.start(workers=0)  # the API alone: nothing is fetched
        yield service


def timed(method: str, url: str, body: bytes | None = None) -> tuple[int, float, Any]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    started = time.perf_counter()
    status, _, raw = http(method, url, body, headers, timeout=120)
    elapsed = time.perf_counter() - started
    return status, elapsed, json.loads(raw) if raw else None


def until_status(service: Service, request_id: str, wanted: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status, _, raw = http("GET", f"{service.url}/api/status/{request_id}?limit=1")
        doc = json.loads(raw)
        if (status == 404 and wanted == "gone") or (status == 200 and doc["status"] == wanted):
            return doc
        assert time.monotonic() < deadline, (wanted, doc.get("progress"))
        time.sleep(0.5)


def test_a_50000_image_request_is_cancelled_retried_and_deleted_in_bounded_time(
    idle: Service,
) -> None:
    rows = [(f"P{i}", [f"http://127.0.0.1:9/{i}.jpg"]) for i in range(IMAGES)]
    status, answer = idle.upload(products_csv(rows))
    assert status == 202, answer
    request_id = answer["request_id"]
    base = f"{idle.url}/api/requests/{request_id}"
    timings = {}

    started = time.perf_counter()
    status, timings["cancel"], doc = timed("POST", f"{base}/cancel")
    assert status == 202 and doc["progress"]["total"] == IMAGES
    doc = until_status(idle, request_id, "cancelled")
    timings["cancelled, all"] = time.perf_counter() - started
    assert doc["progress"]["cancelled"] == IMAGES

    status, timings["retry"], doc = timed("POST", f"{base}/retry")
    assert status == 202 and doc["progress"]["pending"] == IMAGES
    status, timings["cancel again"], _ = timed("POST", f"{base}/cancel")
    assert status == 202
    until_status(idle, request_id, "cancelled")

    started = time.perf_counter()
    status, timings["delete"], _ = timed("DELETE", base)
    assert status == 204
    until_status(idle, request_id, "gone")  # at once: marked deleted before the answer
    status, _, raw = http("GET", f"{idle.url}/api/requests?limit=5")
    assert request_id not in raw.decode()
    url = (
        idle.env.get("IMGBATCH_DATABASE_URL")
        or Settings(data_dir=idle.data_dir).resolved_database_url
    )
    deadline = time.monotonic() + 120
    while query(url, "SELECT count(*) FROM requests WHERE id = :r", r=request_id)[0][0]:
        assert time.monotonic() < deadline, "the background removal did not finish"
        time.sleep(0.5)
    for table in ("images", "products"):  # the request row goes last
        sql = f"SELECT count(*) FROM {table} WHERE request_id = :r"
        assert query(url, sql, r=request_id)[0][0] == 0, table
    timings["deleted, all rows"] = time.perf_counter() - started
    print({name: f"{seconds:.2f} s" for name, seconds in timings.items()})
    assert timings["cancel"] < ANSWER_WITHIN and timings["delete"] < ANSWER_WITHIN, timings
    assert timings["retry"] < 3 * ANSWER_WITHIN, timings
