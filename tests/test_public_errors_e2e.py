"""What clients read never carries server paths, internal host names or exception text.

The status document, API errors and the webhook listings are read by whoever
uploaded; the details of a server-side failure go to the log only.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.imageserver import ImageServer
from support.service import Service, http, products_csv


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    env = {
        "IMGBATCH_UPLOAD_RATE_LIMIT": "0",
        # A storage fault is retried, then fails the image: quickly here.
        "IMGBATCH_STORAGE_RETRY_SECONDS": "2",
        "IMGBATCH_RETRY_DELAY_SECONDS": "0.5",
    }
    svc = Service(tmp_path / "data", env)
    try:
        svc.start(workers=1, concurrency=1)
        yield svc
    finally:
        svc.stop()


def test_a_storage_failure_reaches_the_client_without_paths_or_exception_text(
    service: Service, image_server: ImageServer
) -> None:
    warm = service.upload(products_csv([("Warm", [image_server.url("photo1.jpg")])]))[1]
    assert service.wait_final(warm["request_id"])["status"] == "completed"  # the worker runs
    # The storage directory becomes a file after start-up: every write fails with
    # "[Errno 20] Not a directory: '/…/data/images/…'".
    images = service.data_dir / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.write_bytes(b"not a directory")

    status, answer = service.upload(products_csv([("Shoe", [image_server.url("photo0.jpg")])]))
    assert status == 202, answer
    doc = service.wait_final(answer["request_id"])
    (product,) = doc["products"]
    (error,) = product["errors"]
    assert error["code"] == "storage"
    text = json.dumps(doc)
    for leak in (str(service.data_dir), "/images", "Errno", "Not a directory", "Error:"):
        assert leak not in text, (leak, error)
    assert error["message"] == "could not store the image; the operator has the details"
    assert "Not a directory" in service.logs()  # the details are in the log

    status, _, raw = http("GET", f"{service.url}/api/requests/{answer['request_id']}/webhooks")
    assert status == 200 and str(service.data_dir) not in raw.decode()
