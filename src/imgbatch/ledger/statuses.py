"""Status vocabulary and the pure rules that derive a request's or product's status.

`cancelled` is an image status (an image a cancel stopped before it started: no error
code) and a final request/product status: a request someone cancelled ends `cancelled`
once the images in flight at that moment have finished, whatever they came to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Image statuses
PENDING = "pending"
PROCESSING = "processing"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
UNFINISHED = (PENDING, PROCESSING)
IMAGE_STATUSES = (PENDING, PROCESSING, DONE, FAILED, CANCELLED)

# Request and product statuses
COMPLETED = "completed"
COMPLETED_WITH_ERRORS = "completed_with_errors"
FINAL = (COMPLETED, COMPLETED_WITH_ERRORS, FAILED, CANCELLED)
REQUEST_STATUSES = (PENDING, PROCESSING, *FINAL)
# A large upload still being written in chunks (`ledger.intake`): invisible to every
# route and sweep until it becomes `pending` in one step.
RECEIVING = "receiving"


@dataclass(frozen=True)
class Progress:
    total: int
    succeeded: int
    failed: int
    pending: int
    cancelled: int = 0

    @property
    def percent(self) -> float:
        """Share of images that reached an end (done, failed or cancelled), one decimal."""
        if self.total == 0:
            return 100.0
        return round(100.0 * (self.succeeded + self.failed + self.cancelled) / self.total, 1)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": self.pending,
            "cancelled": self.cancelled,
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
    cancelled = counts.get(CANCELLED, 0)
    pending = sum(counts.get(status, 0) for status in UNFINISHED)
    return Progress(succeeded + failed + pending + cancelled, succeeded, failed, pending, cancelled)


def derive_status(image_statuses: Iterable[str]) -> str:
    """The status of a product (or request) from its images' statuses.

    pending while nothing has started, processing while anything is unfinished,
    then cancelled (any image cancelled), completed (all done), failed (all failed)
    or completed_with_errors.
    """
    counts: dict[str, int] = {}
    for status in image_statuses:
        counts[status] = counts.get(status, 0) + 1
    return status_from_counts(counts)


def status_from_counts(counts: Mapping[str, int], cancel_requested: bool = False) -> str:
    """The status from {image status: count}; see `final_status` once nothing is unfinished."""
    progress = progress_from_counts(counts)
    if progress.pending:
        started = (
            progress.succeeded + progress.failed + progress.cancelled + counts.get(PROCESSING, 0)
        )
        return PROCESSING if started else PENDING
    return final_status(progress.succeeded, progress.failed, progress.cancelled, cancel_requested)


def final_status(done: int, failed: int, cancelled: int, cancel_requested: bool = False) -> str:
    """A finished request's (or product's) status from its images' end states.

    Cancelled wins: a request someone cancelled ends `cancelled` even when the images
    in flight at that moment were its last ones (the cancel was accepted, so it is what
    happened). `ledger.operations.finalize_request` computes the same rule in SQL.
    """
    if cancel_requested or cancelled:
        return CANCELLED
    if failed == 0:
        return COMPLETED
    if done == 0:
        return FAILED
    return COMPLETED_WITH_ERRORS


def retryable(status: str, error_code: str | None, codes: Iterable[str] | None) -> bool:
    """Whether retry puts an image back: every failed one (or those with one of `codes`),
    and every cancelled one (retrying a cancelled request resumes it)."""
    if status == CANCELLED:
        return True
    return status == FAILED and (codes is None or error_code in set(codes))
