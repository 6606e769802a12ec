"""A large upload written in chunks stays invisible until its last chunk, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from imgbatch import ledger
from imgbatch.catalogue import ProductRow
from imgbatch.config import Settings
from imgbatch.context import Context
from imgbatch.errors import ApiError
from imgbatch.intake import upload as intake
from imgbatch.jobs import sweep_once
from imgbatch.ledger import Database, Image, Product, Request, upgrade, utcnow
from imgbatch.ledger import statuses as st
from imgbatch.reports import get_request
from support.databases import postgres_database, sqlite_url

OPTIONS = {
    "quality": 50,
    "output_format": "keep",
    "webhook_url": None,
    "owner": None,
    "max_width": None,
    "max_height": None,
}


@pytest.fixture(params=["sqlite", "postgresql"])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Context]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        upgrade(url)
        yield Context(Settings(data_dir=tmp_path, database_url=url))
    else:
        with postgres_database() as url:
            upgrade(url)
            yield Context(Settings(data_dir=tmp_path, database_url=url))


def products(n: int, urls_per_row: int = 3, first: int = 0) -> list[ProductRow]:
    return [
        ProductRow(
            row=i + 2,
            serial_number=i + 1,
            product_name=f"Product {i + 1}",
            urls=tuple(f"https://img.example/{i}/{j}.jpg" for j in range(urls_per_row)),
        )
        for i in range(first, first + n)
    ]


def rows(db: Database, model: type[Product] | type[Image], request_id: str) -> int:
    with db.session() as session:
        return int(
            session.execute(
                select(func.count()).select_from(model).where(model.request_id == request_id)
            ).scalar_one()
        )


def test_chunks_stay_invisible_until_the_request_opens(ctx: Context) -> None:
    db = ctx.db
    ledger.begin_request(db, request_id="big", product_count=4, image_count=12, **OPTIONS)
    first = ledger.add_products(db, "big", products(2), 0)
    # Half written: no route sees it, no sweep enqueues it, nothing can finalize it.
    with pytest.raises(ApiError) as missing:
        get_request(ctx, "big", None)
    assert missing.value.status == 404
    assert "big" not in ledger.unenqueued_requests(db, utcnow() + timedelta(hours=1))
    assert ledger.finalize_request(db, "big") is None
    second = ledger.add_products(db, "big", products(2, first=2), 2)
    assert ledger.open_request(db, "big")
    request = get_request(ctx, "big", None)
    assert request.status == st.PENDING
    assert len(first) == len(second) == 6 and max(first) < min(second)
    with db.session() as session:
        ordered = session.execute(
            select(Image.id)
            .join(Product, Product.id == Image.product_id)
            .where(Image.request_id == "big")
            .order_by(Product.position, Image.position)
        ).scalars()
        assert list(ordered) == first + second  # ids in input order, chunk after chunk
        positions = session.execute(
            select(Product.position).where(Product.request_id == "big").order_by(Product.id)
        ).scalars()
        assert list(positions) == [0, 1, 2, 3]


def test_an_abandoned_intake_cannot_open_or_grow(ctx: Context) -> None:
    db = ctx.db
    ledger.begin_request(db, request_id="gone", product_count=4, image_count=12, **OPTIONS)
    ledger.add_products(db, "gone", products(2), 0)
    assert ledger.abandon_request(db, "gone")
    with pytest.raises(LookupError):
        ledger.add_products(db, "gone", products(2, first=2), 2)
    assert not ledger.open_request(db, "gone")
    assert not ledger.abandon_request(db, "gone")  # once


def test_a_failed_intake_is_abandoned_and_the_sweeper_removes_it(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "INTAKE_CHUNK_IMAGES", 6)  # two products per chunk
    monkeypatch.setattr(intake, "SQLITE_CHUNK_PAUSE", 0.0)
    real_add = ledger.add_products
    calls = []

    def failing_add(*args: object, **kwargs: object) -> list[int]:
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("the database went away")
        return real_add(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(intake, "add_products", failing_add)
    csv = b"S. No.,Product Name,Input Image Urls\n" + b"".join(
        f'{i},P{i},"https://img.example/{i}/a.jpg,https://img.example/{i}/b.jpg,'
        f'https://img.example/{i}/c.jpg"\n'.encode()
        for i in range(1, 9)
    )
    with pytest.raises(RuntimeError):
        intake.accept_upload(
            ctx, csv, quality=50, output_format="keep", webhook_url=None, owner=None
        )
    with ctx.db.session() as session:
        (request,) = session.execute(select(Request)).scalars()
    assert request.status == st.RECEIVING and request.deleted_at is not None
    assert rows(ctx.db, Image, request.id) == 12  # two chunks were written
    # The removal takes tombstones a minute old (a live deletion may still work on one).
    with ctx.db.session() as session:
        session.get(Request, request.id).deleted_at = utcnow() - timedelta(minutes=2)  # type: ignore[union-attr]
    sweep_once(ctx)
    assert rows(ctx.db, Image, request.id) == rows(ctx.db, Product, request.id) == 0
    with ctx.db.session() as session:
        assert session.get(Request, request.id) is None


def test_an_intake_whose_process_died_is_found_by_the_sweeper(ctx: Context) -> None:
    db = ctx.db
    ledger.begin_request(db, request_id="dead", product_count=4, image_count=12, **OPTIONS)
    ledger.add_products(db, "dead", products(2), 0)
    ledger.begin_request(db, request_id="alive", product_count=4, image_count=12, **OPTIONS)
    ledger.add_products(db, "alive", products(2), 0)
    with db.session() as session:  # "dead" wrote its last chunk ten minutes ago
        session.get(Request, "dead").updated_at = utcnow() - timedelta(minutes=10)  # type: ignore[union-attr]
    assert ledger.stalled_intakes(db, utcnow() - timedelta(minutes=5)) == ["dead"]
    sweep_once(ctx)
    with db.session() as session:
        assert session.get(Request, "dead").deleted_at is not None  # type: ignore[union-attr]
        assert session.get(Request, "alive").deleted_at is None  # type: ignore[union-attr]
    ledger.add_products(db, "alive", products(2, first=2), 2)
    assert ledger.open_request(db, "alive")


def test_a_large_upload_is_written_in_chunks_and_opened_whole(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "INTAKE_CHUNK_IMAGES", 7)
    monkeypatch.setattr(intake, "SQLITE_CHUNK_PAUSE", 0.0)
    writes = []
    real_add = ledger.add_products

    def counting_add(*args: object, **kwargs: object) -> list[int]:
        writes.append(args)
        return real_add(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(intake, "add_products", counting_add)
    csv = b"S. No.,Product Name,Input Image Urls\n" + b"".join(
        f'{i},P{i},"https://img.example/{i}/a.jpg,https://img.example/{i}/b.jpg"\n'.encode()
        for i in range(1, 21)
    )
    accepted = intake.accept_upload(
        ctx, csv, quality=50, output_format="keep", webhook_url=None, owner=None
    )
    assert (accepted.products, accepted.images) == (20, 40)
    assert len(writes) == 5  # 4 products (8 images) per chunk
    request = get_request(ctx, accepted.request_id, None)
    assert request.status == st.PENDING and request.image_count == 40
    assert rows(ctx.db, Image, accepted.request_id) == 40
    assert ctx.queue.depth() > 0


def test_a_url_repeated_across_chunks_is_fetched_once(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "INTAKE_CHUNK_IMAGES", 4)
    monkeypatch.setattr(intake, "SQLITE_CHUNK_PAUSE", 0.0)
    same = "https://img.example/same.jpg"
    csv = b"S. No.,Product Name,Input Image Urls\n" + b"".join(
        f'{i},P{i},"{same},https://img.example/{i}.jpg"\n'.encode() for i in range(1, 7)
    )
    accepted = intake.accept_upload(
        ctx, csv, quality=50, output_format="keep", webhook_url=None, owner=None
    )
    assert accepted.images == 12
    with ctx.db.session() as session:
        images = (
            session.execute(
                select(Image).where(Image.request_id == accepted.request_id).order_by(Image.id)
            )
            .scalars()
            .all()
        )
    source = images[0]
    assert source.input_url == same and source.source_image_id is None
    assert source.followers == 5  # one per later product, chunks apart
    followers = [i for i in images if i.source_image_id is not None]
    assert {i.input_url for i in followers} == {same} and len(followers) == 5
    assert all(i.source_image_id == source.id for i in followers)


def test_a_keys_backlog_counts_its_other_unfinished_images(ctx: Context) -> None:
    db = ctx.db
    options = {**OPTIONS, "owner": "alpha"}
    ledger.create_request(db, request_id="a1", products=products(3), **options)  # 9 images
    ledger.create_request(db, request_id="a2", products=products(1), **options)  # 3
    ledger.create_request(db, request_id="b1", products=products(5), **{**OPTIONS, "owner": "beta"})
    assert ledger.owner_backlog(db, "alpha", excluding="a2") == 9
    assert ledger.owner_backlog(db, "alpha", excluding="none") == 12
    assert ledger.owner_backlog(db, "gamma", excluding="none") == 0
    with db.session() as session:  # finished images no longer count
        for image in session.execute(select(Image).where(Image.request_id == "a1")).scalars():
            image.status = st.DONE
            break
    assert ledger.owner_backlog(db, "alpha", excluding="a2") == 8
