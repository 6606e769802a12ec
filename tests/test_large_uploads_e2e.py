"""A large upload through the real service: capped in images, and no lock that stalls others.

A 20 MiB CSV of 41,142 rows x 50 URLs meant two million images, was accepted in minutes
while other clients' uploads failed with `database is locked`. Now an upload may hold at
most `IMGBATCH_MAX_IMAGES_PER_REQUEST` image URLs (413 `too_many_images`), and one at the
cap is written in chunks while other uploads go on (SQLite, the embedded default).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from support.databases import query
from support.service import Service, http, multipart, products_csv


def _rows(count: int, per_row: int) -> list[tuple[str, list[str]]]:
    return [
        (f"P{i}", [f"http://127.0.0.1:9/{i}/{j}/{'x' * 40}.jpg" for j in range(per_row)])
        for i in range(count)
    ]


def _post(service: Service, csv: bytes, timeout: float = 120) -> tuple[int, bytes]:
    body, content_type = multipart(csv)
    status, _, raw = http(
        "POST", service.url + "/api/upload", body, {"Content-Type": content_type}, timeout
    )
    return status, raw


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {"IMGBATCH_UPLOAD_RATE_LIMIT": "0", "IMGBATCH_MAX_IMAGES_PER_REQUEST": "100000"}
    svc = Service(tmp_path_factory.mktemp("large") / "data", env)
    try:
        svc.start(workers=0)
        yield svc
    finally:
        svc.stop()


def _requests_in_ledger(service: Service) -> int:
    url = f"sqlite:///{service.data_dir / 'imgbatch.db'}"
    return int(query(url, "SELECT count(*) FROM requests")[0][0])


def test_an_upload_over_the_image_cap_is_refused_and_nothing_is_stored(service: Service) -> None:
    before = _requests_in_ledger(service)
    started = time.monotonic()
    status, raw = _post(service, products_csv(_rows(2001, 50)))  # 100,050 images
    assert status == 413, raw
    assert b'"too_many_images"' in raw and b"100000 image URLs" in raw
    assert time.monotonic() - started < 10
    assert _requests_in_ledger(service) == before


def test_an_upload_at_the_cap_does_not_hold_up_other_uploads(service: Service) -> None:
    big = products_csv(_rows(2000, 50))  # exactly 100,000 images
    small = products_csv([("Small", ["http://127.0.0.1:9/small.jpg"])])
    answer: dict[str, object] = {}

    def upload_big() -> None:
        answer["big"] = _post(service, big)

    thread = threading.Thread(target=upload_big)
    thread.start()
    waits = []
    while thread.is_alive():
        started = time.monotonic()
        status, raw = _post(service, small)
        waits.append(time.monotonic() - started)
        assert status == 202, raw
        time.sleep(0.2)
    thread.join()
    status, raw = answer["big"]  # type: ignore[misc]
    assert status == 202, raw
    assert len(waits) >= 5
    # One transaction for the 100,000 images held SQLite's write lock for about 3 s.
    assert max(waits) < 1.0, waits
    request_id = json.loads(raw)["request_id"]
    assert service.status(request_id)["progress"]["total"] == 100_000
