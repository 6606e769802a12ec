"""Errors are data: a stable code, a public message, an HTTP status, retryable or not.

API errors are turned into JSON by one exception handler (`api.app`); per-image
failures are recorded on the image row by their `code`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (or just the type), for logs and operator errors."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@dataclass
class ApiError(Exception):
    """An error answered to an HTTP client as `{"error": {code, message, details}}`."""

    status: int
    code: str
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class ImageFailure(Exception):
    """One image could not be processed; `code` is recorded on its row.

    Codes: `bad_url`, `blocked_address`, `not_found`, `upstream`, `timeout`,
    `too_large`, `not_an_image`, `unsupported_format`, `too_many_pixels`,
    `too_complex`, `corrupt_image`, `storage`, `internal`.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"ImageFailure({self.code!r}, {self.message!r}, retryable={self.retryable})"


class BackendFault(Exception):
    """A backend (storage, database, queue, an image host) failed: not the image's fault.

    The work goes back (the image is released to `pending` with a delay that does not
    count as an attempt) and is retried with exponential back-off for a bounded time,
    `IMGBATCH_<KIND>_RETRY_SECONDS`; only then does the image fail, with `code` (the
    kind unless given: an image host's trouble ends as `upstream` or `timeout`) and
    `message` as the last error. `delay` is the backend's own hint (a
    `Retry-After`, a host's cool-down) when it gave one: the next try waits at least that.
    Kinds: `storage`, `database`, `queue` (and `fetch` for image hosts).
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        delay: float | None = None,
        detail: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code or kind  # the image's code if it finally fails (`fetch` → `upstream`)
        self.message = message  # what clients may read (it becomes the image's error)
        self.delay = delay
        self.detail = detail or message  # what the log gets: paths, hosts, exception text

    def __repr__(self) -> str:
        return f"BackendFault({self.kind!r}, {self.message!r}, delay={self.delay})"
