from __future__ import annotations

import pytest

from imgbatch.ledger import statuses as st


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        (["pending", "pending"], "pending"),
        (["pending", "processing"], "processing"),
        (["done", "pending"], "processing"),
        (["failed", "pending"], "processing"),
        (["done", "done"], "completed"),
        (["failed", "failed"], "failed"),
        (["done", "failed"], "completed_with_errors"),
        (["done"], "completed"),
    ],
)
def test_derive_status(images: list[str], expected: str) -> None:
    assert st.derive_status(images) == expected


def test_progress_percent() -> None:
    progress = st.progress_from_counts({"done": 3, "failed": 1, "pending": 2, "processing": 2})
    assert progress.as_dict() == {
        "total": 8,
        "succeeded": 3,
        "failed": 1,
        "pending": 4,
        "percent": 50.0,
    }
    assert st.progress_from_counts({}).percent == 100.0


def test_savings_over_done_images() -> None:
    savings = st.Savings(images=3, bytes_in=3000, bytes_out=1000)
    assert savings.as_dict() == {
        "images": 3,
        "bytes_in": 3000,
        "bytes_out": 1000,
        "saved_bytes": 2000,
        "saved_percent": 66.7,
    }
    assert (savings + st.Savings(1, 1000, 1000)).as_dict()["saved_percent"] == 50.0
    assert st.Savings().as_dict() == {
        "images": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "saved_bytes": 0,
        "saved_percent": 0.0,
    }
