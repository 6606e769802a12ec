"""`pipeline.process_images` in-process with real parts only: a SQLite ledger, local files
in tmp_path and the loopback image server (no mocks).

One job claims its images in one transaction, fetches and compresses each, stores them
with one `put_many`, records them in one transaction and finalizes the request whose
last image it recorded. Its claims are leases, renewed while the job is slow; a claim
lost to another worker makes the job drop that image's result.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from imgbatch import ledger
from imgbatch.catalogue import ProductRow
from imgbatch.config import Settings
from imgbatch.context import Context
from imgbatch.jobs import pipeline
from imgbatch.jobs.gate import process_gate
from imgbatch.ledger import Database, Image, Request, WebhookDelivery, upgrade, utcnow
from imgbatch.ledger import statuses as st
from support.databases import add_request, expire_lease, sqlite_url
from support.imageserver import ImageServer

RID = "a" * 32  # request ids are 32 characters, as an upload makes them


@pytest.fixture
def server(image_dir: Path) -> Iterator[ImageServer]:
    """A server of our own, so `requests` lists only this test's fetches."""
    with ImageServer(image_dir) as srv:
        yield srv


@pytest.fixture
def make_ctx(tmp_path: Path) -> Iterator[Callable[..., Context]]:
    """A Context on a fresh SQLite ledger and local storage under tmp_path."""
    made: list[Context] = []

    def make(**overrides: Any) -> Context:
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "database_url": sqlite_url(tmp_path),
            "storage_url": (tmp_path / "images").as_uri(),
            "allow_private_urls": True,  # the image server is on 127.0.0.1
            "fetch_attempts": 1,
            "fetch_total_timeout": 10.0,
            **overrides,
        }
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        upgrade(settings.resolved_database_url)
        ctx = Context(settings)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        if "fetcher" in ctx.__dict__:
            ctx.fetcher.close()
        ctx.db.engine.dispose()


def product(serial: int, *urls: str) -> ProductRow:
    return ProductRow(row=serial + 1, serial_number=serial, product_name=f"P{serial}", urls=urls)


def rows(db: Database, ids: list[int]) -> list[Image]:
    """The images' ledger rows, in the order of `ids`."""
    with db.session() as session:
        found = {i.id: i for i in session.execute(select(Image).where(Image.id.in_(ids))).scalars()}
    return [found[i] for i in ids]


def request_row(db: Database, request_id: str) -> Request:
    with db.session() as session:
        request = session.get(Request, request_id)
        assert request is not None
        return request


@dataclass
class Job:
    """`process_images` running in a thread, its outcome kept for the test's thread."""

    ctx: Context
    ids: list[int]
    result: list[str] | None = None
    error: BaseException | None = None
    seconds: float = 0.0
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="job", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self.result = pipeline.process_images(self.ctx, self.ids)
        except BaseException as exc:  # reported by join(), not as a thread warning
            self.error = exc
        finally:
            self.seconds = time.monotonic() - started

    def start(self) -> Job:
        self.thread.start()
        return self

    def join(self, timeout: float = 20.0) -> list[str]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the job did not finish"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def decoded_size(data: bytes) -> tuple[int, int]:
    with PILImage.open(io.BytesIO(data)) as im:
        return im.size


# --- one job of one request ------------------------------------------------------------


def test_a_job_compresses_stores_records_and_finalizes_its_request_once(
    make_ctx: Callable[..., Context], server: ImageServer, image_dir: Path
) -> None:
    # A webhook URL makes finalization observable: the winner creates one delivery row.
    # Nothing sends it here (no delivery loop runs), and it is a loopback URL anyway.
    ctx = make_ctx(webhook_url=server.url("/hook"))
    files = ["photo0.jpg", "photo1.jpg", "alpha.png", "photo.webp", "photo2.jpg"]
    ids = add_request(
        ctx.db,
        [
            product(11, server.url(files[0]), server.url(files[1])),
            product(12, server.url(files[2])),
            product(13, server.url(files[3]), server.url(files[4])),
        ],
        RID,
    )
    assert request_row(ctx.db, RID).status == st.PENDING

    assert pipeline.process_images(ctx, ids) == [st.DONE] * 5

    # request / serial number (not product position) / image position . extension
    expected_keys = [
        f"{RID}/11/0.jpg",
        f"{RID}/11/1.jpg",
        f"{RID}/12/0.png",
        f"{RID}/13/0.webp",
        f"{RID}/13/1.jpg",
    ]
    expected_formats = ["jpeg", "jpeg", "png", "webp", "jpeg"]
    for row, name, key, fmt in zip(
        rows(ctx.db, ids), files, expected_keys, expected_formats, strict=True
    ):
        source = (image_dir / name).read_bytes()
        stored = ctx.storage.get(key)
        assert stored is not None, key
        assert row.status == st.DONE and row.error_code is None and row.error_message is None
        assert row.attempts == 1 and row.lease_until is None and row.finished_at is not None
        assert row.output_key == key
        assert row.output_url == f"{ctx.settings.resolved_public_base_url}/files/{key}"
        assert row.output_format == fmt
        assert row.bytes_in == len(source)
        assert row.bytes_out == len(stored.data) == stored.size
        assert len(stored.data) <= len(source)
        assert (row.width, row.height) == decoded_size(source) == decoded_size(stored.data)
        if not row.kept_original:
            assert len(stored.data) < len(source)
    # Nothing but the five objects (no temp files or stray keys).
    assert ctx.storage.list_keys(f"{RID}/") == sorted(expected_keys)
    assert sorted(server.requests) == sorted(f"/{name}" for name in files)

    request = request_row(ctx.db, RID)
    assert request.status == st.COMPLETED
    completed_at = request.completed_at
    assert completed_at is not None

    # A replayed job (duplicate delivery) is a no-op: nothing claimed, fetched or finalized.
    fetched = len(server.requests)
    assert pipeline.process_images(ctx, ids) == []
    assert len(server.requests) == fetched
    assert pipeline.finalize(ctx, RID) is None
    assert request_row(ctx.db, RID).completed_at == completed_at
    assert [r.attempts for r in rows(ctx.db, ids)] == [1] * 5
    with ctx.db.session() as session:
        deliveries = session.execute(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.request_id == RID)
        ).scalar_one()
    assert deliveries == 1


def test_each_image_of_a_mixed_job_fails_or_succeeds_on_its_own(
    make_ctx: Callable[..., Context], server: ImageServer, tmp_path: Path
) -> None:
    # A store that keeps failing fails the image once its retry time is spent: none here
    # (test_storage_outage.py covers the retries themselves).
    ctx = make_ctx(storage_retry_seconds=0)
    ids = add_request(
        ctx.db,
        [
            product(1, server.url("photo0.jpg"), server.url("/status/404")),
            product(2, server.url("/text")),
            product(3, server.url("photo1.jpg")),  # its directory cannot be made
            product(4, server.url("photo2.jpg")),
        ],
        RID,
    )
    # A regular file where product 3's directory `RID/3` must go: only its write fails.
    blocker = tmp_path / "images" / RID / "3"
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"in the way")

    assert pipeline.process_images(ctx, ids) == [
        st.DONE,
        st.FAILED,
        st.FAILED,
        st.FAILED,
        st.DONE,
    ]

    good, missing, text, unstorable, last = rows(ctx.db, ids)
    assert (good.status, good.output_key) == (st.DONE, f"{RID}/1/0.jpg")
    assert (last.status, last.output_key) == (st.DONE, f"{RID}/4/0.jpg")
    for row in (good, last):
        assert row.output_key is not None
        stored = ctx.storage.get(row.output_key)
        assert stored is not None and len(stored.data) == row.bytes_out

    assert (missing.error_code, text.error_code, unstorable.error_code) == (
        "not_found",
        "not_an_image",
        "storage",
    )
    assert missing.error_message is not None and "404" in missing.error_message
    assert unstorable.error_message is not None
    assert unstorable.error_message.startswith("could not store the image")
    assert str(tmp_path) not in unstorable.error_message
    for row in (missing, text, unstorable):
        assert row.status == st.FAILED and row.finished_at is not None
        assert row.output_key is row.output_url is row.bytes_out is None
    assert blocker.read_bytes() == b"in the way"
    assert ctx.storage.list_keys(f"{RID}/") == [f"{RID}/1/0.jpg", f"{RID}/3", f"{RID}/4/0.jpg"]

    assert request_row(ctx.db, RID).status == st.COMPLETED_WITH_ERRORS
    assert pipeline.process_images(ctx, ids) == []  # failed images stay failed


# --- leases ------------------------------------------------------------------------------


def test_a_job_longer_than_its_lease_keeps_every_claim(
    make_ctx: Callable[..., Context], server: ImageServer
) -> None:
    lease = 0.8
    ctx = make_ctx(lease_seconds=lease)
    urls = [server.url(f"/slow?seconds=0.3&file=photo{i}.jpg") for i in range(6)]
    ids = add_request(ctx.db, [product(s + 1, *urls[2 * s : 2 * s + 2]) for s in range(3)], RID)

    job = Job(ctx, ids).start()
    wait_until(lambda: len(server.requests) > 0)  # the job has claimed all six (then fetched)
    stolen: list[ledger.ClaimedImage] = []
    tries = 0
    while job.thread.is_alive():  # another worker, trying to take the job's images
        stolen += ledger.claim_images(ctx.db, ids, lease_seconds=60)
        tries += 1
        time.sleep(0.02)
    statuses = job.join()

    assert job.seconds > 2 * lease, "the job must outlive its first lease to test renewal"
    assert tries >= 20
    assert stolen == []
    assert statuses == [st.DONE] * 6
    assert [(r.status, r.attempts) for r in rows(ctx.db, ids)] == [(st.DONE, 1)] * 6
    assert len(server.requests) == 6  # each image fetched once, by the job
    assert request_row(ctx.db, RID).status == st.COMPLETED


@pytest.mark.parametrize(
    ("lease", "noticed_by"),
    [(0.8, "renewal"), (30.0, "recording")],
    ids=["lost-before-fetch", "lost-before-record"],
)
def test_a_claim_lost_to_another_worker_is_left_to_it(
    make_ctx: Callable[..., Context], server: ImageServer, lease: float, noticed_by: str
) -> None:
    """With a short lease the renewal after the slow fetch notices the loss and the job skips
    the image; with a long one nothing is renewed and the record step drops the result."""
    ctx = make_ctx(lease_seconds=lease)
    slow = "/slow?seconds=0.5&file=photo0.jpg"
    ids = add_request(
        ctx.db,
        [
            product(1, server.url(slow), server.url("photo1.jpg")),
            product(2, server.url("photo2.jpg"), server.url("photo3.jpg")),
        ],
        RID,
    )
    taken = ids[1]

    job = Job(ctx, ids).start()
    wait_until(lambda: slow in server.requests)  # all four are claimed; the first is slow
    assert rows(ctx.db, [taken])[0].attempts == 1
    expire_lease(ctx.db, taken)
    (other,) = ledger.claim_images(ctx.db, [taken], lease_seconds=60)
    assert other.attempt == 2
    statuses = job.join()

    assert statuses == [st.DONE] * 3
    first, lost, third, fourth = rows(ctx.db, ids)
    assert [(r.status, r.attempts) for r in (first, third, fourth)] == [(st.DONE, 1)] * 3
    # The other worker's claim is intact: still processing, its attempt, its lease.
    assert (lost.status, lost.attempts) == (st.PROCESSING, 2)
    assert lost.lease_until is not None and lost.lease_until > utcnow() + timedelta(seconds=45)
    assert lost.finished_at is None and lost.output_key is None and lost.bytes_out is None
    fetched_lost = "/photo1.jpg" in server.requests
    if noticed_by == "renewal":
        assert not fetched_lost  # skipped: not fetched, compressed or stored
        assert not ctx.storage.exists(f"{RID}/1/1.jpg")
    else:
        assert fetched_lost  # processed in vain; the ledger refused the result
    # The request waits for the other worker's image.
    assert request_row(ctx.db, RID).status == st.PROCESSING
    assert pipeline.finalize(ctx, RID) is None

    # The other worker finishes: now the request is final.
    (recorded,) = ledger.record_results(
        ctx.db, [(other, ledger.ImageResult.failed("timeout", "slow"))]
    )
    assert recorded.ours and recorded.maybe_last
    assert pipeline.finalize(ctx, RID) == st.COMPLETED_WITH_ERRORS


def test_a_job_of_large_images_stores_them_before_it_ends(
    make_ctx: Callable[..., Context],
    server: ImageServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compressed images wait in memory only up to STORE_AFTER_BYTES, then are stored."""
    monkeypatch.setattr(pipeline, "STORE_AFTER_BYTES", 1)  # every image is "large"
    ctx = make_ctx()
    ids = add_request(
        ctx.db,
        [
            product(1, server.url("photo0.jpg")),
            product(2, server.url("/slow?seconds=1&file=photo1.jpg")),
        ],
        RID,
    )
    job = Job(ctx, ids).start()
    # The first image is stored while the job still waits for the second one.
    wait_until(lambda: ctx.storage.exists(f"{RID}/1/0.jpg"))
    assert job.thread.is_alive()
    assert [r.status for r in rows(ctx.db, ids)] == [st.PROCESSING] * 2  # recorded together
    assert job.join() == [st.DONE, st.DONE]
    assert ctx.storage.list_keys(f"{RID}/") == [f"{RID}/1/0.jpg", f"{RID}/2/0.jpg"]
    assert request_row(ctx.db, RID).status == st.COMPLETED


def test_a_database_lost_after_the_claim_pauses_the_process_and_fails_no_image(
    make_ctx: Callable[..., Context], server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database answers the claim, then goes away before the record: a backend's fault.
    The job ends quietly (no traceback into the consumer), the process pauses taking jobs,
    and the images stay claimed for the sweeper to send again once their leases run out."""
    ctx = make_ctx()
    ids = add_request(ctx.db, [product(1, server.url("photo0.jpg"))], RID)

    def unreachable(*args: object, **kwargs: object) -> None:
        raise OperationalError("UPDATE images", None, ConnectionRefusedError("server closed"))

    monkeypatch.setattr(pipeline.ledger, "record_results", unreachable)
    gate = process_gate()
    assert gate.pause_left() == 0
    assert pipeline.process_images(ctx, ids) == []
    assert gate.pause_left() > 0
    gate.ok("database")
    assert [(r.status, r.error_code) for r in rows(ctx.db, ids)] == [(st.PROCESSING, None)]
