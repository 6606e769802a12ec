"""The guard thread in-process: leases kept while a job runs, an image held to its CPU budget.

Jobs run in threads here (`worker_type=thread`), where the guard records the image and
gives the job's other images back but cannot end the process; the process case (the
default, where the process is replaced) is proved end to end in `test_image_budget_e2e`.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from imgbatch.catalogue import ProductRow
from imgbatch.config import Settings
from imgbatch.context import Context
from imgbatch.jobs import budget, pipeline
from imgbatch.ledger import ClaimedImage, Image, upgrade
from imgbatch.ledger import statuses as st
from support.databases import add_request, sqlite_url
from support.imageserver import ImageServer
from support.jpegs import many_scan_jpeg

CLAIMED = ClaimedImage(
    id=1,
    request_id="r",
    input_url="http://x/a.jpg",
    serial_number=1,
    product_position=0,
    position=0,
    quality=50,
    output_format="keep",
    attempt=1,
)


class CountingLeases:
    def __init__(self) -> None:
        self.kept = 0

    def keep(self) -> None:
        self.kept += 1


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_the_guard_keeps_leases_while_a_job_runs_and_not_after() -> None:
    guard = budget.ImageGuard(60, lambda *_: None, end_process=False)
    leases = CountingLeases()
    with guard.job(leases):
        time.sleep(1.0)
    kept = leases.kept
    assert kept >= 3  # every POLL (0.25 s)
    time.sleep(0.6)
    assert leases.kept == kept  # between jobs the guard sleeps


def test_an_image_over_budget_is_condemned_once_and_one_under_it_never() -> None:
    condemned: list[tuple[ClaimedImage, float]] = []
    guard = budget.ImageGuard(
        0.3, lambda image, used, _leases: condemned.append((image, used)), end_process=False
    )
    leases = CountingLeases()
    with guard.job(leases), guard.image(CLAIMED):
        _spin(0.1)
        time.sleep(0.6)  # waiting costs no CPU: within budget
    assert condemned == []
    with guard.job(leases), guard.image(CLAIMED):
        _spin(1.2)
    assert len(condemned) == 1
    image, used = condemned[0]
    assert image is CLAIMED and 0.3 < used < 1.0


def test_a_worker_process_gets_a_cpu_backstop_for_the_image_only() -> None:
    before = resource.getrlimit(resource.RLIMIT_CPU)
    guard = budget.ImageGuard(100, lambda *_: None, end_process=True)
    with guard.job(CountingLeases()), guard.image(CLAIMED):
        soft, _hard = resource.getrlimit(resource.RLIMIT_CPU)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        assert soft != resource.RLIM_INFINITY
        assert 150 < soft - (usage.ru_utime + usage.ru_stime) <= 156  # 1.5 budgets + 5 s
    assert resource.getrlimit(resource.RLIMIT_CPU) == before


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        database_url=sqlite_url(tmp_path),
        storage_url=(tmp_path / "images").as_uri(),
        allow_private_urls=True,
        fetch_attempts=1,
        worker_type="thread",
        max_image_seconds=0.3,
    )
    upgrade(settings.resolved_database_url)
    context = Context(settings)
    yield context
    context.db.engine.dispose()


@pytest.fixture
def server(tmp_path: Path, image_dir: Path) -> Iterator[ImageServer]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "slow.jpg").write_bytes(many_scan_jpeg(6000, 4000, 100))  # ~1 s of CPU
    (root / "photo.jpg").write_bytes((image_dir / "photo0.jpg").read_bytes())
    with ImageServer(root) as srv:
        yield srv


def test_the_pipeline_fails_the_image_too_complex_and_gives_the_others_back(
    ctx: Context, server: ImageServer
) -> None:
    products = [
        ProductRow(row=2, serial_number=1, product_name="Slow", urls=(server.url("slow.jpg"),)),
        ProductRow(row=3, serial_number=2, product_name="Next", urls=(server.url("photo.jpg"),)),
    ]
    ids = add_request(ctx.db, products, "b" * 32)
    enqueued: list[Any] = []
    ctx.queue.enqueue = lambda image_ids, **_: enqueued.append(list(image_ids))  # type: ignore[method-assign]
    done = threading.Event()

    def run() -> None:
        pipeline.process_images(ctx, ids)  # one job of both images
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30)
    with ctx.db.session() as session:
        slow, following = (session.get(Image, i) for i in ids)
    assert slow is not None and following is not None
    assert (slow.status, slow.error_code, slow.attempts) == (st.FAILED, "too_complex", 1)
    assert "0.3 s of CPU" in (slow.error_message or "")
    # The image after it in the job was never started: back to pending, its attempt undone,
    # and enqueued again for another job.
    assert (following.status, following.attempts, following.lease_until) == (st.PENDING, 0, None)
    assert enqueued == [[following.id]]
    with ctx.db.session() as session:
        assert session.execute(select(Image.status).where(Image.id == ids[0])).scalar() == "failed"
