"""Throw-away databases: a SQLite file, or a fresh PostgreSQL database created and dropped per use."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import update

from imgbatch.catalogue import ProductRow
from imgbatch.ledger import Database, Image, create_request, utcnow

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_database(prefix: str = "imgbatch_test") -> Iterator[str]:
    """Create a uniquely named PostgreSQL database; yield its SQLAlchemy URL; drop it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        from imgbatch.ledger import dispose_engines

        dispose_engines()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'ledger.db'}"


def query(url: str, sql: str, **params: object) -> list[Any]:
    """Rows of one read-only query against a ledger, as a process outside the service would."""
    from sqlalchemy import create_engine, text

    from imgbatch.config import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()


def add_request(db: Database, products: Sequence[ProductRow], request_id: str) -> list[int]:
    """Write a request the way an upload does (quality 50, same format, no webhook, no key)."""
    return create_request(
        db,
        request_id=request_id,
        products=products,
        quality=50,
        output_format="keep",
        webhook_url=None,
        owner=None,
    )


def expire_lease(db: Database, *image_ids: int) -> None:
    """What the passing of time does to a dead worker's claims: their leases run out."""
    with db.session() as session:
        session.execute(
            update(Image)
            .where(Image.id.in_(image_ids))
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
