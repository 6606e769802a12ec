"""Database engine and sessions, one engine per process, plus Alembic migrations.

SQLite gets WAL mode, a long busy timeout and `synchronous=NORMAL` so API and
worker processes share one file without "database is locked" errors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}


def _after_fork_in_child() -> None:
    # A thread of the parent (sweeper, webhook sender) may have held the lock at fork
    # time; the child starts with a fresh one. Engines are keyed by pid, so the parent's
    # are never used here, and they stay referenced in `_engines`: closing an inherited
    # SQLite connection in a child can delete the WAL file the parent still writes to.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    """A new engine for `url`; SQLite files get their directory and pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def get_engine(url: str) -> Engine:
    """The engine for `url` in this process (a forked child gets its own)."""
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = create_db_engine(url)
        return engine


def dispose_engines() -> None:
    """Close this process's engines (tests and shutdown; never call it in a forked child)."""
    with _lock:
        for (pid, url), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
                del _engines[(pid, url)]


class Database:
    """Sessions for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._factory: sessionmaker[Session] | None = None
        self._pid = -1

    @property
    def engine(self) -> Engine:
        return get_engine(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        if self._factory is None or self._pid != os.getpid():
            self._factory = sessionmaker(self.engine, expire_on_commit=False)
            self._pid = os.getpid()
        with self._factory.begin() as session:
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A Core connection in a transaction, for hot paths that need no ORM."""
        with self.engine.begin() as conn:
            yield conn

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    if make_url(url).get_backend_name() == "sqlite":
        get_engine(url)  # creates the directory of the file
        database = make_url(url).database
        if database:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)
