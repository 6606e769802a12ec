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
    `corrupt_image`, `storage`, `internal`.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"ImageFailure({self.code!r}, {self.message!r}, retryable={self.retryable})"
