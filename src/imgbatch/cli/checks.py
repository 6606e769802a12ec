"""Start-up checks: a one-line error naming the setting when a backend is unreachable."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from imgbatch.config import redact_url
from imgbatch.context import Context
from imgbatch.errors import ImageFailure, first_line
from imgbatch.fetching import check_url, check_webhook_url
from imgbatch.webhooks import InvalidSecret, signer_for

log = logging.getLogger(__name__)


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
    check_webhook_setting(ctx)


def check_webhook_setting(ctx: Context) -> None:
    """IMGBATCH_WEBHOOK_URL must be a URL the sender may post to, or every delivery fails later.

    A refused URL (bad scheme or port, an address the policy refuses, such as
    loopback without IMGBATCH_ALLOW_PRIVATE_URLS) stops the process. A name that
    does not resolve right now only warns: a receiver's DNS hiccup at boot must not
    keep the service down, and deliveries retry.
    """
    url = ctx.settings.webhook_url
    if not url or not url.strip():
        return
    shown = _origin(url.strip())
    try:
        check_url(url, ctx.policy)
    except ImageFailure as failure:
        raise ConfigError(f"IMGBATCH_WEBHOOK_URL: {shown} is refused: {failure.message}") from None
    try:
        check_webhook_url(url, ctx.policy)
    except ImageFailure as failure:
        if failure.code == "blocked_address":
            raise ConfigError(
                f"IMGBATCH_WEBHOOK_URL: {shown} is refused: {failure.message}"
            ) from None
        log.warning("IMGBATCH_WEBHOOK_URL: %s: %s; deliveries will retry", shown, failure.message)


def _origin(url: str) -> str:
    """scheme://host[:port] only: a webhook URL's path or query may hold a token."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}"
