"""Idempotent uploads on real SQLite and PostgreSQL, with real concurrency.

Many threads upload with one key at once (released by a barrier): one request is created,
every caller gets its answer; the same key with another body is refused; the key is free
again after 24 hours, after its request is deleted, and after an upload that stored nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from imgbatch import jobs, ledger
from imgbatch.context import Context
from imgbatch.errors import ApiError
from imgbatch.intake import UploadKey, accept_upload, check_key
from imgbatch.intake import upload as upload_module
from imgbatch.ledger import IdempotencyKey, Request
from support.lifecycle import ledger_context, race
from support.service import products_csv

CSV = products_csv(
    [("Shoe", ["https://img.example/a.jpg"]), ("Hat", ["https://img.example/b.jpg"])]
)
OTHER_CSV = products_csv([("Sock", ["https://img.example/c.jpg"])])


@pytest.fixture(params=["sqlite", "postgresql"])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Context]:
    with ledger_context(request.param, tmp_path) as context:
        yield context


def upload(
    ctx: Context, data: bytes = CSV, key: str | None = "k-1", scope: str = "key:a", **options: Any
) -> Any:
    return accept_upload(
        ctx,
        data,
        quality=options.get("quality", 50),
        output_format="keep",
        webhook_url=None,
        owner=None,
        idempotency=UploadKey(scope, key) if key is not None else None,
    )


def requests_in_ledger(ctx: Context) -> int:
    with ctx.db.session() as session:
        return int(session.execute(select(func.count()).select_from(Request)).scalar_one())


def test_a_repeated_upload_answers_the_first_one_again(ctx: Context) -> None:
    first = upload(ctx)
    assert not first.replayed and first.body["request_id"] == first.request_id
    assert first.body == {
        "request_id": first.request_id,
        "status": "pending",
        "status_url": f"/api/status/{first.request_id}",
        "products": 2,
        "images": 2,
    }
    again = upload(ctx)
    assert again.replayed and again.body == first.body
    assert requests_in_ledger(ctx) == 1
    with pytest.raises(ApiError) as reused:
        upload(ctx, OTHER_CSV)
    assert (reused.value.status, reused.value.code) == (422, "idempotency_key_reused")
    with pytest.raises(ApiError):
        upload(ctx, quality=60)  # the same CSV with other options is another upload
    other_caller = upload(ctx, scope="key:b")  # a key is per caller
    assert not other_caller.replayed and other_caller.request_id != first.request_id
    assert requests_in_ledger(ctx) == 2


@pytest.mark.parametrize("chunked", [False, True], ids=["one-transaction", "chunked"])
def test_concurrent_uploads_with_one_key_create_one_request(
    ctx: Context, chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if chunked:  # the large-upload path: an invisible request written chunk by chunk
        monkeypatch.setattr(upload_module, "INTAKE_CHUNK_IMAGES", 1)
    for round_ in range(3):
        results = race(*[partial(upload, ctx, key=f"race-{round_}") for _ in range(6)])
        assert all(not isinstance(r, Exception) for r in results), results
        assert len({r.request_id for r in results}) == 1, results
        assert sum(not r.replayed for r in results) == 1
        assert len({json.dumps(r.body, sort_keys=True) for r in results}) == 1
    assert requests_in_ledger(ctx) == 3
    with ctx.db.session() as session:
        assert session.execute(select(func.count()).select_from(IdempotencyKey)).scalar() == 3


def test_concurrent_uploads_with_one_key_and_different_bodies(ctx: Context) -> None:
    bodies = [CSV, OTHER_CSV, CSV, OTHER_CSV]
    results = race(*[partial(upload, ctx, body, "mixed") for body in bodies])
    created = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, ApiError)]
    assert len({r.request_id for r in created}) == 1 and len(created) == 2, results
    assert [r.code for r in refused] == ["idempotency_key_reused"] * 2
    assert requests_in_ledger(ctx) == 1


def test_a_key_is_free_again_after_24_hours_or_once_its_request_is_deleted(ctx: Context) -> None:
    first = upload(ctx)
    with ctx.db.session() as session:
        session.execute(
            update(IdempotencyKey).values(created_at=ledger.utcnow() - timedelta(hours=25))
        )
    second = upload(ctx, OTHER_CSV)  # a day later the key names a new upload
    assert not second.replayed and second.request_id != first.request_id
    assert upload(ctx, OTHER_CSV).request_id == second.request_id
    for image in ledger.claim_images(ctx.db, _image_ids(ctx, second.request_id), 60):
        ledger.record_results(ctx.db, [(image, ledger.ImageResult.failed("not_found", "x"))])
    jobs.finalize(ctx, second.request_id)
    assert jobs.delete(ctx, second.request_id)
    third = upload(ctx, OTHER_CSV)
    assert not third.replayed and third.request_id != second.request_id


def _image_ids(ctx: Context, request_id: str) -> list[int]:
    with ctx.db.session() as session:
        return list(
            session.execute(
                select(ledger.Image.id).where(ledger.Image.request_id == request_id)
            ).scalars()
        )


def test_an_upload_that_stored_nothing_keeps_no_key(ctx: Context) -> None:
    with pytest.raises(ApiError) as bad:
        upload(ctx, b"S. No.,Product Name,Input Image Urls\n1,,not-a-url\n")
    assert bad.value.status == 422
    fixed = upload(ctx)  # the corrected CSV with the same key
    assert not fixed.replayed and requests_in_ledger(ctx) == 1


def test_the_sweeper_forgets_expired_keys(ctx: Context) -> None:
    for key in ("old-1", "old-2", "new"):
        upload(ctx, key=key)
    with ctx.db.session() as session:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key.like("old-%"))
            .values(created_at=ledger.utcnow() - timedelta(hours=30))
        )
    jobs.sweep_once(ctx)
    with ctx.db.session() as session:
        left = session.execute(select(IdempotencyKey.key)).scalars().all()
    assert left == ["new"]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a", True),
        ("order-2026-12-02T10:00:00Z ~!@#$%^&*()", True),
        ("x" * 255, True),
        (" spaced ", True),
        ("", False),
        ("x" * 256, False),
        ("tab\there", False),
        ("caf\u00e9", False),
        ("del\x7f", False),
    ],
)
def test_key_format(value: str, valid: bool) -> None:
    if valid:
        assert check_key(value) == value
    else:
        with pytest.raises(ApiError) as refused:
            check_key(value)
        assert (refused.value.status, refused.value.code) == (400, "bad_idempotency_key")
    assert check_key(None) is None
