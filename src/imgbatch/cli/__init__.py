"""The command line (typer + rich): serve, worker, migrate, submit.

Holds: `commands` (the typer app), `client` (the small HTTP client `submit` uses) and `checks`
(start-up checks of settings and backends, one line naming the setting on failure).
May import: anything below it; nothing imports it.
"""

from __future__ import annotations

from .commands import app

__all__ = [
    "app",
]
