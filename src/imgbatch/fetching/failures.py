"""What went wrong in an HTTP exchange, as an `ImageFailure` code and a public message.

Pure classification, kept apart from the client: which statuses and transport
errors are `not_found`, `upstream` or `timeout`, which are worth retrying, and
how long the server asked us to wait.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.ssl_match_hostname import CertificateError

from imgbatch.errors import ImageFailure


class StatusFailure(ImageFailure):
    """An HTTP status failure; carries the status and the server's Retry-After, if any."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None,
        status: int = 0,
    ):
        super().__init__(code, message, retryable=retryable)
        self.retry_after = retry_after
        self.status = status


class ConnectFailure(ImageFailure):
    """No connection could be made (refused, unreachable, connect timeout): the host is down."""


# A 429 without Retry-After still asks us to slow down: the host cools this long.
THROTTLE_SECONDS = 5.0


def host_trouble(failure: ImageFailure) -> tuple[str, float | None] | None:
    """Whether a failure is the host's trouble rather than the image's, and of which kind.

    ("throttled", seconds): a 429 (with or without Retry-After) or a 503 with Retry-After:
    the host asked us to come back later. ("unreachable", None): no connection could be
    made. None otherwise: the host answered, and the answer is about the image (a 404, a
    503 without Retry-After retried as before, a body too large...).
    """
    if isinstance(failure, StatusFailure):
        if failure.status == 429:
            return "throttled", failure.retry_after or THROTTLE_SECONDS
        if failure.status == 503 and failure.retry_after is not None:
            return "throttled", failure.retry_after
        return None
    if isinstance(failure, ConnectFailure):
        return "unreachable", None
    return None


def status_failure(status: int, host: str, retry_after: str | None) -> StatusFailure:
    """The failure for a non-2xx, non-redirect `status`; 404/410 are final, 429/5xx transient."""
    message = f"HTTP {status} from {host}"
    if status in (404, 410):
        return StatusFailure("not_found", message, retryable=False, retry_after=None, status=status)
    transient = status == 429 or status >= 500
    return StatusFailure(
        "upstream",
        message,
        retryable=transient,
        retry_after=_retry_after(retry_after),
        status=status,
    )


def transport_failure(
    exc: Exception, host: str, *, expired: bool, doing: str, limit: float
) -> ImageFailure:
    """The failure for a urllib3/OS error; `expired` when the request's deadline had passed.

    `doing` ("fetching from", "posting to") and `limit` (seconds) word the message.
    """
    if expired:
        return ImageFailure("timeout", f"timed out after {limit:g}s {doing} {host}", retryable=True)
    if isinstance(exc, NewConnectionError):
        return ConnectFailure(
            "upstream", f"cannot connect to {host}: {_reason(exc)}", retryable=True
        )
    if isinstance(exc, ConnectTimeoutError):
        return ConnectFailure("timeout", f"connect timeout {doing} {host}", retryable=True)
    if isinstance(exc, ReadTimeoutError):
        return ImageFailure("timeout", f"read timeout {doing} {host}", retryable=True)
    if isinstance(exc, SSLError):
        permanent = _is_certificate_error(exc)
        return ImageFailure(
            "upstream", f"TLS error {doing} {host}: {_reason(exc)}", retryable=not permanent
        )
    return ImageFailure(
        "upstream", f"connection error {doing} {host}: {_reason(exc)}", retryable=True
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _reason(exc: BaseException) -> str:
    """A short cause (e.g. "Connection refused") without URLs or object reprs."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
            return f"certificate not trusted ({cause.verify_message})"
        if isinstance(cause, ssl.CertificateError | CertificateError):
            return "certificate does not match the host name"
        if isinstance(cause, ssl.SSLError) and cause.reason:
            return str(cause.reason)
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return type(exc).__name__


def _is_certificate_error(exc: BaseException) -> bool:
    certificate_errors = (ssl.SSLCertVerificationError, ssl.CertificateError, CertificateError)
    return any(isinstance(cause, certificate_errors) for cause in _causes(exc))
