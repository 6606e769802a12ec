"""Helpers for tests of a request's life (cancel, retry, delete) against a real ledger.

`ledger_context` builds a Context on SQLite or a fresh PostgreSQL database (local-file
storage and a SQLite queue in the test's directory); `settle` does what a worker does to
images; `race` runs calls at once in threads released by one barrier.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from imgbatch import jobs, ledger
from imgbatch.catalogue import ProductRow
from imgbatch.config import Settings
from imgbatch.context import Context
from imgbatch.ledger import Request, WebhookDelivery, upgrade
from imgbatch.ledger import statuses as st
from support.databases import add_request, postgres_database, sqlite_url

HOOK = "http://127.0.0.1:9/hook"  # never called: no delivery loop runs here


@contextlib.contextmanager
def ledger_context(backend: str, tmp_path: Path, **settings: Any) -> Iterator[Context]:
    """A Context on `backend` ("sqlite" or "postgresql"), migrated, with a webhook URL."""

    def build(url: str) -> Context:
        upgrade(url)
        return Context(Settings(data_dir=tmp_path, database_url=url, webhook_url=HOOK, **settings))

    if backend == "sqlite":
        yield build(sqlite_url(tmp_path))
    else:
        with postgres_database() as url:
            yield build(url)


def new_request(ctx: Context, images: int) -> tuple[str, list[int]]:
    request_id = f"req{time.monotonic_ns()}"
    products = [
        ProductRow(row=i + 2, serial_number=i + 1, product_name=f"P{i}", urls=(f"https://x/{i}",))
        for i in range(images)
    ]
    return request_id, add_request(ctx.db, products, request_id)


def settle(ctx: Context, image_ids: list[int], result: ledger.ImageResult | None = None) -> None:
    """Process the images as a worker would: claim, record, finalize if last."""
    claimed = ledger.claim_images(ctx.db, image_ids, lease_seconds=60)
    assert len(claimed) == len(image_ids)
    outcome = result or done()
    recorded = ledger.record_results(ctx.db, [(c, outcome) for c in claimed])
    if any(r.maybe_last for r in recorded):
        jobs.finalize(ctx, claimed[0].request_id)


def done() -> ledger.ImageResult:
    return ledger.ImageResult(status=st.DONE, output_key="k.jpg", bytes_in=10, bytes_out=5)


def failed(code: str) -> ledger.ImageResult:
    return ledger.ImageResult.failed(code, f"{code} happened")


def request_row(ctx: Context, request_id: str) -> Request:
    with ctx.db.session() as session:
        row = session.get(Request, request_id)
        assert row is not None
        return row


def image_statuses(ctx: Context, request_id: str) -> dict[str, int]:
    with ctx.db.session() as session:
        return ledger.image_counts(session, request_id)


def deliveries(ctx: Context, request_id: str) -> list[tuple[int, str, str]]:
    with ctx.db.session() as session:
        rows = session.execute(
            select(WebhookDelivery.run, WebhookDelivery.event_id, WebhookDelivery.payload)
            .where(WebhookDelivery.request_id == request_id)
            .order_by(WebhookDelivery.run)
        ).all()
    return [(r.run, r.event_id, r.payload) for r in rows]


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once in threads; each result, or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results
