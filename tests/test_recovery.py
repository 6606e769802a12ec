"""A worker killed with kill -9 mid-request loses nothing: the sweeper finds its work again."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from support.databases import query
from support.imageserver import ImageServer
from support.service import Service


def test_kill_worker_mid_request(tmp_path: Path, image_server: ImageServer) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    # Slow images keep the worker busy, so the kill lands mid-request with images in flight.
    for i in range(1, 13):
        # `n` keeps the URLs distinct: a repeated URL would be fetched and stored once.
        url = image_server.url(f"/slow?seconds=0.5&file=photo{i % 6}.jpg&n={i}")
        writer.writerow([i, f"P{i}", url])
    with Service(tmp_path / "data") as service:
        service.start(workers=1, concurrency=2)
        status, answer = service.upload(out.getvalue().encode())
        assert status == 202
        request_id = answer["request_id"]
        deadline = time.monotonic() + 30
        while service.status(request_id)["progress"]["succeeded"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        service.kill_worker(service.workers[0])
        progress = service.status(request_id)["progress"]
        assert progress["pending"] > 0, "the kill must land mid-request"

        service.start_worker(concurrency=2)
        doc = service.wait_final(request_id, timeout=120)
        assert doc["status"] == "completed", doc["progress"]
        assert doc["progress"]["succeeded"] == 12

        # Every image done exactly once in the ledger; one object per image, no duplicates.
        (done,) = query(
            f"sqlite:///{tmp_path / 'data' / 'imgbatch.db'}",
            "SELECT count(*), count(DISTINCT output_key) FROM images"
            " WHERE request_id = :r AND status = 'done'",
            r=request_id,
        )
        assert tuple(done) == (12, 12)
        stored = sorted(
            p for p in (tmp_path / "data" / "images" / request_id).rglob("*") if p.is_file()
        )
        assert len(stored) == 12
