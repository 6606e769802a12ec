"""Start-up checks: a one-line error naming the setting when a backend is unreachable."""

from __future__ import annotations

from imgbatch.config import redact_url
from imgbatch.context import Context
from imgbatch.errors import first_line
from imgbatch.webhooks import InvalidSecret, signer_for


class ConfigError(Exception):
    """A backend named in the configuration cannot be used."""


def check_backends(ctx: Context) -> None:
    """Ping the database, queue and storage; raise ConfigError naming the faulty setting."""
    s = ctx.settings
    try:
        ctx.db.ping()
    except Exception as exc:
        raise ConfigError(
            f"IMGBATCH_DATABASE_URL: cannot connect to {redact_url(s.resolved_database_url)} "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from None
    try:
        ctx.queue.check()
    except Exception as exc:
        raise ConfigError(first_line(exc)) from None
    try:
        ctx.storage.check()
    except Exception as exc:
        raise ConfigError(first_line(exc)) from None
    try:
        signer_for(s.webhook_secret)
    except InvalidSecret as exc:
        raise ConfigError(f"IMGBATCH_WEBHOOK_SECRET: {first_line(exc)}") from None
