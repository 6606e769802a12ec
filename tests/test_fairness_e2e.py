"""Fairness: a small request is not starved by a large one, on both shapes.

The queue was FIFO: every later request waited behind every image of every earlier one
(two million images, in the security review). Jobs now carry a virtual start time as
their queue priority (`queue.fairness`), so requests take turns, and an API key with
work outstanding queues its next request behind its own backlog, not everyone's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import encode, photo
from support.backends import scaleout_env
from support.imageserver import ImageServer
from support.s3server import SCRUBBED_AWS_VARS
from support.service import Service, products_csv

ALPHA, BETA = "alpha-key-for-the-big-one", "beta-key-for-the-small-one"
BIG_IMAGES = 5_000


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.jpg").write_bytes(encode(photo(96, 64, seed=1), "JPEG", quality=90))
    with ImageServer(root) as server:
        yield server


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("scaleout-redis", marks=pytest.mark.scaleout),
        pytest.param("scaleout-postgresql", marks=pytest.mark.scaleout),
    ]
)
def keyed(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Service]:
    with contextlib.ExitStack() as stack:
        env = {"IMGBATCH_API_KEYS": f"{ALPHA},{BETA}", "IMGBATCH_UPLOAD_RATE_LIMIT": "0"}
        if request.param.startswith("scaleout"):
            for name in SCRUBBED_AWS_VARS:
                monkeypatch.delenv(name, raising=False)
            queue = request.param.split("-")[1]
            s3 = request.getfixturevalue("s3_server")
            env |= stack.enter_context(scaleout_env(s3, queue=queue))
        service = Service(tmp_path / "data", env)
        stack.callback(service.stop)
        service.start(workers=1, concurrency=2)
        yield service


def test_a_small_request_from_another_key_is_not_starved_by_a_large_one(
    keyed: Service, tiny_images: ImageServer
) -> None:
    # 5,000 distinct images that each take 20 ms to download: a minute of work at least.
    rows = [
        (
            f"Big {r}",
            [tiny_images.url(f"/slow?seconds=0.02&file=tiny.jpg&n={r}-{i}") for i in range(50)],
        )
        for r in range(BIG_IMAGES // 50)
    ]
    status, big = keyed.upload(products_csv(rows), headers=bearer(ALPHA))
    assert status == 202, big
    deadline = time.monotonic() + 60
    while keyed.status(big["request_id"], bearer(ALPHA))["progress"]["succeeded"] < 40:
        assert time.monotonic() < deadline, "the large request did not start"
        time.sleep(0.2)

    small_rows = [(f"Small {i}", [tiny_images.url(f"/tiny.jpg?small={i}")]) for i in range(5)]
    started = time.monotonic()
    status, small = keyed.upload(products_csv(small_rows), headers=bearer(BETA))
    assert status == 202, small
    doc = keyed.wait_final(small["request_id"], timeout=120, headers=bearer(BETA), interval=0.1)
    took = time.monotonic() - started
    assert doc["status"] == "completed", doc["progress"]
    big_now = keyed.status(big["request_id"], bearer(ALPHA))["progress"]
    assert took < 5, f"the 5-image request took {took:.1f} s behind {big_now}"
    assert big_now["pending"] > BIG_IMAGES // 2, big_now  # the large one is far from done
