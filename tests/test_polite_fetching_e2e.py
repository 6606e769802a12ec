"""Polite fetching through the real service (API + worker processes, loopback image hosts).

- a request's repeated URL is downloaded once: the host's request log shows one GET
  per distinct URL, while status, output CSV and savings count every position;
- at most IMGBATCH_FETCH_PER_HOST downloads per host are in flight, whatever the number
  of worker processes (the host counts the requests it is answering at once);
- a host answering `429 Retry-After: 2` cools down: its images go back to the queue
  (no worker slot sleeps: with one slot, the other host's images all finish first),
  the host sees no request while it cools, and every image ends `done`.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.databases import query
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


@pytest.mark.parametrize(("per_host", "expected"), [("2", 2), ("0", None)])
def test_downloads_in_flight_per_host_stay_within_the_limit_across_worker_processes(
    tmp_path: Path, host: ImageServer, per_host: str, expected: int | None
) -> None:
    """Two worker processes of three job processes each: six would download at once."""
    urls = [host.url(f"/slow?seconds=0.6&file=photo{i % 6}.jpg&n={i}") for i in range(18)]
    with Service(tmp_path / "data", env={"IMGBATCH_FETCH_PER_HOST": per_host}) as svc:
        svc.start(workers=2, concurrency=3)
        request_id = submit(svc, [(f"P{i}", [url]) for i, url in enumerate(urls)])
        assert svc.wait_final(request_id)["status"] == "completed"
    if expected is not None:
        assert host.most_in_flight == expected  # never above the limit, and reached
    else:  # without a limit the same run goes past it: the limit is what holds it
        assert host.most_in_flight > 2


def test_a_throttling_host_cools_down_while_other_hosts_images_go_on(
    tmp_path: Path, host: ImageServer, image_dir: Path
) -> None:
    env = {"IMGBATCH_RETRY_DELAY_SECONDS": "1"}
    with ImageServer(image_dir) as other, Service(tmp_path / "data", env=env) as svc:
        svc.start(workers=1, concurrency=1)  # one worker slot: a sleep in it would stall all
        throttled = [host.url(f"/throttle/photo{i}.jpg?first=2&retry_after=2") for i in range(4)]
        fine = [other.url(f"/photo{i}.jpg") for i in range(4)]
        rows = [(f"P{i}", [a, b]) for i, (a, b) in enumerate(zip(throttled, fine, strict=True))]
        request_id = submit(svc, rows)
        cooling_seen = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not cooling_seen:
            metrics = http("GET", f"{svc.url}/metrics")[2].decode()
            origin = f"http://127.0.0.1:{host.port}"
            cooling_seen = "imgbatch_fetch_hosts_cooling 1.0" in metrics and (
                f'imgbatch_fetch_host_cooldown_seconds{{host="{origin}"}}' in metrics
            )
            time.sleep(0.05)
        assert cooling_seen, "the cool-down never showed in /metrics"
        doc = svc.wait_final(request_id)
        assert doc["status"] == "completed", doc["products"]
        assert all(i["status"] == "done" for p in doc["products"] for i in p["images"])

        rows_by_url = {
            url: finished
            for url, finished in query(
                f"sqlite:///{tmp_path / 'data' / 'imgbatch.db'}",
                "SELECT input_url, finished_at FROM images WHERE request_id = :r",
                r=request_id,
            )
        }
        assert max(rows_by_url[u] for u in fine) < min(rows_by_url[u] for u in throttled)

        # two 429s, then one GET per image: nothing was asked while the host cooled down
        assert len(host.requests) == 2 + 4, host.requests
        assert len(other.requests) == 4
        logs = svc.logs()
        origin = f"http://127.0.0.1:{host.port}"
        assert len(re.findall(rf"image host {re.escape(origin)} cooling down for", logs)) == 2
        assert f"image host http://127.0.0.1:{other.port} cooling" not in logs
        metrics = http("GET", f"{svc.url}/metrics")[2].decode()
        given = re.search(r'imgbatch_images_given_back_total\{backend="fetch"\} (\d+)', metrics)
        assert given is not None and int(given.group(1)) >= 4, metrics
