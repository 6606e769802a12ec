"""Polite fetching through the real service (API + worker processes, loopback image hosts).

- a request's repeated URL is downloaded once: the host's request log shows one GET
  per distinct URL, while status, output CSV and savings count every position;
"""

from __future__ import annotations

import collections
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.imageserver import ImageServer
from support.service import Service, http, products_csv


@pytest.fixture
def host(image_dir: Path) -> Iterator[ImageServer]:
    """An image host of this test alone: its request log starts empty."""
    with ImageServer(image_dir) as server:
        yield server


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    service = Service(tmp_path / "data")
    try:
        service.start(workers=1, concurrency=2)
        yield service
    finally:
        service.stop()


def submit(svc: Service, rows: list[tuple[str, list[str]]]) -> str:
    status, answer = svc.upload(products_csv(rows))
    assert status == 202, answer
    return str(answer["request_id"])


def output_rows(svc: Service, request_id: str) -> list[list[str]]:
    status, _, raw = http("GET", f"{svc.url}/api/requests/{request_id}/output.csv")
    assert status == 200, raw
    return list(csv.reader(io.StringIO(raw.decode())))[1:]


def test_a_repeated_url_is_downloaded_once_and_counted_at_every_position(
    svc: Service, host: ImageServer, image_dir: Path
) -> None:
    photo0, photo1 = host.url("/photo0.jpg"), host.url("/photo1.jpg")
    same_as_photo0 = photo0.replace("http://", "HTTP://") + "#zoom"  # one GET all the same
    missing = host.url("/missing.jpg")
    rows = [
        ("Shirt", [photo0, photo0, photo0]),  # as peers' samples do: three in a row
        ("Shirt, blue", [photo1, same_as_photo0]),
        ("Shirt, red", [photo1]),
        ("Hat", [missing, missing]),
    ]
    request_id = submit(svc, rows)
    doc = svc.wait_final(request_id)

    gets = collections.Counter(r.path for r in host.received if r.method == "GET")
    assert gets == {"/photo0.jpg": 1, "/photo1.jpg": 1, "/missing.jpg": 1}, host.requests

    assert doc["status"] == "completed_with_errors"
    assert doc["progress"]["total"] == 8
    assert (doc["progress"]["succeeded"], doc["progress"]["failed"]) == (6, 2)
    outputs = [p["output_urls"] for p in doc["products"]]
    shared = outputs[0][0]
    assert shared and outputs[0] == [shared] * 3 and outputs[1][1] == shared
    assert outputs[1][0] == outputs[2][0] and outputs[1][0] != shared
    assert [e["code"] for e in doc["products"][3]["errors"]] == ["not_found", "not_found"]

    size0 = (image_dir / "photo0.jpg").stat().st_size
    size1 = (image_dir / "photo1.jpg").stat().st_size
    savings = doc["savings"]
    assert savings["images"] == 6
    assert savings["bytes_in"] == 4 * size0 + 2 * size1

    csv_rows = output_rows(svc, request_id)
    assert [len(r[3].split(",")) for r in csv_rows] == [3, 2, 1, 2]
    assert csv_rows[0][3] == ",".join([shared] * 3)
    assert csv_rows[3][3] == ","  # both positions failed: empty, but still there
    status, _, body = http("GET", shared)
    assert status == 200 and body[:2] == b"\xff\xd8"

    status, _, raw = http("GET", f"{svc.url}/metrics")
    metrics = raw.decode()
    assert 'imgbatch_images_repeated_url_total{outcome="done"} 4.0' in metrics
    assert 'imgbatch_images_repeated_url_total{outcome="failed"} 1.0' in metrics
    assert (
        json.loads(http("GET", f"{svc.url}/api/status/{request_id}")[2])["progress"]["percent"]
        == 100.0
    )
