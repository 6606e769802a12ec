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
    """An HTTP status failure; carries the server's Retry-After, if any."""

    def __init__(self, code: str, message: str, *, retryable: bool, retry_after: float | None):
        super().__init__(code, message, retryable=retryable)
        self.retry_after = retry_after


def status_failure(status: int, host: str, retry_after: str | None) -> StatusFailure:
    """The failure for a non-2xx, non-redirect `status`; 404/410 are final, 429/5xx transient."""
    message = f"HTTP {status} from {host}"
    if status in (404, 410):
        return StatusFailure("not_found", message, retryable=False, retry_after=None)
    transient = status == 429 or status >= 500
    return StatusFailure(
        "upstream", message, retryable=transient, retry_after=_retry_after(retry_after)
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
        return ImageFailure("upstream", f"cannot connect to {host}: {_reason(exc)}", retryable=True)
    if isinstance(exc, ConnectTimeoutError):
        return ImageFailure("timeout", f"connect timeout {doing} {host}", retryable=True)
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
