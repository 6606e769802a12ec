"""Start-up checks: a one-line error naming the setting when a backend is unreachable."""

from __future__ import annotations

from .context import Context
from .signing import InvalidSecret, signer_for


class ConfigError(Exception):
    """A backend named in the configuration cannot be used."""


def check_backends(ctx: Context) -> None:
    """Ping the database, queue and storage; raise ConfigError naming the faulty setting."""
    s = ctx.settings
    try:
        ctx.db.ping()
    except Exception as exc:
        raise ConfigError(
            f"IMGBATCH_DATABASE_URL: cannot connect to {_redact(s.resolved_database_url)} "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    try:
        ctx.queue.check()
    except Exception as exc:
        raise ConfigError(_first_line(exc)) from None
    try:
        ctx.storage.check()
    except Exception as exc:
        raise ConfigError(_first_line(exc)) from None
    try:
        signer_for(s.webhook_secret)
    except InvalidSecret as exc:
        raise ConfigError(f"IMGBATCH_WEBHOOK_SECRET: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
