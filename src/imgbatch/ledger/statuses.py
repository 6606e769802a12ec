"""Status vocabulary and the pure rules that derive a request's or product's status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Image statuses
PENDING = "pending"
PROCESSING = "processing"
DONE = "done"
FAILED = "failed"
UNFINISHED = (PENDING, PROCESSING)

# Request and product statuses
COMPLETED = "completed"
COMPLETED_WITH_ERRORS = "completed_with_errors"
FINAL = (COMPLETED, COMPLETED_WITH_ERRORS, FAILED)


@dataclass(frozen=True)
class Progress:
    total: int
    succeeded: int
    failed: int
    pending: int

    @property
    def percent(self) -> float:
        if self.total == 0:
            return 100.0
        return round(100.0 * (self.succeeded + self.failed) / self.total, 1)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": self.pending,
            "percent": self.percent,
        }


@dataclass(frozen=True)
class Savings:
    """What compression saved over a set of done images (a request's, or many requests')."""

    images: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    @property
    def saved_bytes(self) -> int:
        return self.bytes_in - self.bytes_out

    @property
    def saved_percent(self) -> float:
        """100 x saved / in, one decimal; 0.0 while nothing is done."""
        if self.bytes_in <= 0:
            return 0.0
        return round(100.0 * self.saved_bytes / self.bytes_in, 1)

    def __add__(self, other: Savings) -> Savings:
        return Savings(
            self.images + other.images,
            self.bytes_in + other.bytes_in,
            self.bytes_out + other.bytes_out,
        )

    def as_dict(self) -> dict[str, float | int]:
        """The public `savings` object of status documents and webhook events."""
        return {
            "images": self.images,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "saved_bytes": self.saved_bytes,
            "saved_percent": self.saved_percent,
        }


def progress_from_counts(counts: Mapping[str, int]) -> Progress:
    """Progress from a {image status: count} mapping."""
    succeeded = counts.get(DONE, 0)
    failed = counts.get(FAILED, 0)
    pending = sum(counts.get(status, 0) for status in UNFINISHED)
    return Progress(succeeded + failed + pending, succeeded, failed, pending)


def derive_status(image_statuses: Iterable[str]) -> str:
    """The status of a product (or request) from its images' statuses.

    pending while nothing has started, processing while anything is unfinished,
    then completed (all done), failed (all failed) or completed_with_errors.
    """
    counts: dict[str, int] = {}
    for status in image_statuses:
        counts[status] = counts.get(status, 0) + 1
    return status_from_counts(counts)


def status_from_counts(counts: Mapping[str, int]) -> str:
    progress = progress_from_counts(counts)
    if progress.pending:
        started = progress.succeeded + progress.failed + counts.get(PROCESSING, 0)
        return PROCESSING if started else PENDING
    if progress.failed == 0:
        return COMPLETED
    if progress.succeeded == 0:
        return FAILED
    return COMPLETED_WITH_ERRORS
