"""What a refused upload says: the public answer (`CsvRejected`) and its located problems.

Apart from `parsing` so the header and cell rules (`headers`, `cells`) can raise
and report the same way without importing the parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_PREVIEW_CHARS = 80


@dataclass(frozen=True)
class CsvIssue:
    """One problem, located as a user would look for it in a spreadsheet."""

    row: int | None
    column: str | None
    message: str


class CsvRejected(Exception):
    """The upload is refused; `status`, `code`, `message` and `issues` are the public answer."""

    def __init__(
        self, status: int, code: str, message: str, issues: Sequence[CsvIssue] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.issues = list(issues)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def preview(value: str) -> str:
    """A value quoted for a message, cut short so errors never echo a huge cell."""
    if len(value) > _PREVIEW_CHARS:
        value = value[:_PREVIEW_CHARS] + "…"
    return repr(value)
