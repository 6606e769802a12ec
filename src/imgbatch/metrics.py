"""Prometheus metrics (filled in by the operations work; these calls are the seam)."""

from __future__ import annotations


def image_processed(outcome: str, reason: str | None, seconds: float) -> None:
    """Count one processed image and observe its processing time."""


def request_finished(status: str) -> None:
    """Count one request reaching a final status."""
