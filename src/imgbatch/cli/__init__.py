"""The command line (typer + rich): serve, worker, migrate, and the client commands.

Holds: `app` (the typer app, global options, the entry point `main`), `commands` (serve,
worker, migrate), `remote` (submit, status, requests, download, cancel, retry, delete),
`client` (the stdlib HTTP client those use), `follow` (waiting with progress), `report`
(what is printed) and `checks` (start-up checks of settings and backends).
May import: anything below it; nothing imports it.
"""

from __future__ import annotations

from . import commands, remote
from .app import app, main

__all__ = [
    "app",
    "commands",
    "main",
    "remote",
]
