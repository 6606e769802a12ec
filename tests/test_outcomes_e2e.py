"""Outcomes through the real service (API + worker processes, a real image server and webhook
receiver): per-image facts and savings in the status document and the webhook event."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from support.imageserver import ImageServer
from support.receiver import Receiver
from support.service import Service, http

SECRET = "whsec_" + base64.b64encode(b"e2e-outcomes-secret-0123456789ab").decode()
FACTS = ("format", "width", "height", "bytes_in", "bytes_out", "quality")


def csv_bytes(products: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    for serial, urls in enumerate(products, start=1):
        writer.writerow([serial, f"Product {serial}", ",".join(urls)])
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One deployment for the module, webhooks signed; each test uses its own requests."""
    service = Service(
        tmp_path_factory.mktemp("outcomes") / "data",
        env={
            "IMGBATCH_WEBHOOK_SECRET": SECRET,
            "IMGBATCH_WEBHOOK_SCHEDULE": "0.2,0.4,0.8",
            "IMGBATCH_WEBHOOK_POLL_INTERVAL": "0.1",
        },
    )
    try:
        service.start(workers=1, concurrency=2)
        yield service
    finally:
        service.stop()


def submit(svc: Service, products: list[list[str]], **fields: str) -> str:
    status, answer = svc.upload(csv_bytes(products), **fields)
    assert status == 202, answer
    return str(answer["request_id"])


def test_status_and_webhook_report_images_and_savings(
    svc: Service, image_server: ImageServer, image_dir: Path
) -> None:
    products = [
        [image_server.url("/photo0.jpg"), image_server.url("/missing.jpg")],
        [image_server.url("/alpha.png")],
    ]
    with Receiver(secret=SECRET) as hook:
        rid = submit(svc, products, webhook_url=hook.url)
        doc = svc.wait_final(rid)
        (received,) = hook.wait_for(1)
    assert doc["status"] == "completed_with_errors"
    assert doc["options"] == {
        "quality": 50,
        "format": "keep",
        "max_width": None,
        "max_height": None,
    }

    first, second = doc["products"]
    assert [i["input_url"] for i in first["images"]] == products[0]  # input order
    photo, missing = first["images"]
    original = (image_dir / "photo0.jpg").read_bytes()
    code, _, stored = http("GET", photo["output_url"])
    assert code == 200
    assert photo == {
        "input_url": products[0][0],
        "output_url": first["output_urls"][0],
        "status": "done",
        "format": "jpeg",
        "width": 640,
        "height": 480,
        "bytes_in": len(original),
        "bytes_out": len(stored),
        "quality": 50,
        "error": None,
    }
    assert missing["status"] == "failed" and missing["output_url"] is None
    assert all(missing[name] is None for name in FACTS)
    assert missing["error"]["code"] == "not_found" and "404" in missing["error"]["message"]
    assert first["errors"][0]["code"] == "not_found"  # the existing fields stay

    (png,) = second["images"]
    assert png["format"] == "png" and png["quality"] is None  # no quality scale
    assert (png["width"], png["height"]) == (320, 240)

    done = [photo, png]
    bytes_in = sum(i["bytes_in"] for i in done)
    bytes_out = sum(i["bytes_out"] for i in done)
    assert doc["savings"] == {
        "images": 2,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "saved_bytes": bytes_in - bytes_out,
        "saved_percent": round(100 * (bytes_in - bytes_out) / bytes_in, 1),
    }
    assert doc["savings"]["saved_percent"] > 20

    event: dict[str, Any] = Webhook(SECRET).verify(received.body, received.headers)
    assert event["data"]["savings"] == doc["savings"]


def test_savings_are_zero_and_facts_null_until_done(
    svc: Service, image_server: ImageServer
) -> None:
    rid = submit(svc, [[image_server.url("/slow?seconds=2&file=photo1.jpg")]])
    doc = svc.status(rid)
    assert doc["savings"] == {
        "images": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "saved_bytes": 0,
        "saved_percent": 0.0,
    }
    (image,) = doc["products"][0]["images"]
    assert image["status"] in ("pending", "processing")
    assert image["output_url"] is None and image["error"] is None
    assert all(image[name] is None for name in FACTS)
    final = svc.wait_final(rid)
    assert final["savings"]["images"] == 1 and final["savings"]["saved_bytes"] > 0
