"""Alembic environment: migrations run with the URL given by `imgbatch.ledger.engine.upgrade`.

On PostgreSQL an advisory lock serialises concurrent `imgbatch migrate` runs
(several API nodes starting at once in a rolling deploy).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from imgbatch.ledger.engine import create_db_engine
from imgbatch.ledger.models import Base

MIGRATION_LOCK_ID = 0x696D6762  # "imgb"


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_db_engine(url)
    with engine.connect() as connection:
        is_postgres = connection.dialect.name == "postgresql"
        if is_postgres:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if is_postgres:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID}
                )
                connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("imgbatch migrations run online only: use `imgbatch migrate`.")
run_migrations_online()
