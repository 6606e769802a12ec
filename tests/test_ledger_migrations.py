"""The migrations build exactly the models' schema, on SQLite and PostgreSQL, and step back.

A migration that forgets a column, an index or a constraint the models declare (or the
reverse) fails here rather than in a rolling deploy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from imgbatch.ledger import upgrade
from imgbatch.ledger.engine import alembic_config
from imgbatch.ledger.models import Base
from support.databases import postgres_database, sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        with postgres_database() as pg:
            yield pg


def differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_models_and_downgrade_cleanly(url: str) -> None:
    upgrade(url)
    assert differences(url) == []
    command.downgrade(alembic_config(url), "0002")  # the lifecycle migrations step back
    assert differences(url) != []
    upgrade(url)
    assert differences(url) == []
