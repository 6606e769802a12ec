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
        (["cancelled", "cancelled"], "cancelled"),
        (["done", "cancelled"], "cancelled"),
        (["failed", "cancelled"], "cancelled"),
        (["cancelled", "pending"], "processing"),
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
        "cancelled": 0,
        "percent": 50.0,
    }
    assert st.progress_from_counts({}).percent == 100.0


def test_cancelled_images_count_as_ended() -> None:
    progress = st.progress_from_counts({"done": 1, "failed": 1, "cancelled": 2, "processing": 1})
    assert progress.as_dict() == {
        "total": 5,
        "succeeded": 1,
        "failed": 1,
        "pending": 1,
        "cancelled": 2,
        "percent": 80.0,
    }


@pytest.mark.parametrize(
    ("done", "failed", "cancelled", "requested", "expected"),
    [
        (3, 0, 0, False, "completed"),
        (0, 3, 0, False, "failed"),
        (2, 1, 0, False, "completed_with_errors"),
        (2, 1, 1, False, "cancelled"),
        (3, 0, 0, True, "cancelled"),  # the cancel was accepted as the last images finished
        (0, 0, 3, True, "cancelled"),
    ],
)
def test_final_status(
    done: int, failed: int, cancelled: int, requested: bool, expected: str
) -> None:
    assert st.final_status(done, failed, cancelled, requested) == expected
    assert expected in st.FINAL


def test_cancelled_is_a_final_status_and_an_image_status() -> None:
    assert st.CANCELLED in st.FINAL and st.CANCELLED in st.REQUEST_STATUSES
    assert st.CANCELLED in st.IMAGE_STATUSES and st.CANCELLED not in st.UNFINISHED


@pytest.mark.parametrize(
    ("status", "code", "codes", "expected"),
    [
        ("failed", "upstream", None, True),
        ("failed", "upstream", ["upstream", "timeout"], True),
        ("failed", "not_found", ["upstream", "timeout"], False),
        ("cancelled", None, ["upstream"], True),  # a cancelled request resumes whole
        ("done", None, None, False),
        ("pending", None, None, False),
    ],
)
def test_retryable(status: str, code: str | None, codes: list[str] | None, expected: bool) -> None:
    assert st.retryable(status, code, codes) is expected


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
