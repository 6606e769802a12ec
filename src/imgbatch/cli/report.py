"""What the command line prints: errors as a line or a table, requests, the outcome summary.

Results go to stdout (they can be piped); errors, progress and hints go to stderr.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from .client import ApiFailure

FINAL = ("completed", "completed_with_errors", "failed", "cancelled")
EXIT_CODES = {"completed": 0, "completed_with_errors": 2, "failed": 3, "cancelled": 3}


def _console(stderr: bool) -> Console:
    # Server text is never markup; off a terminal (CI logs, pipes) lines are not cut at 80.
    console = Console(stderr=stderr, highlight=False, markup=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, markup=False, soft_wrap=True, width=200)
    return console


out = _console(stderr=False)
err = _console(stderr=True)


def exit_code(status: str) -> int:
    """0 completed, 2 completed_with_errors, 3 failed or cancelled; 0 while still running."""
    return EXIT_CODES.get(status, 0)


def size(n: int | None) -> str:
    return "-" if n is None else decimal(int(n))


def print_failure(failure: ApiFailure) -> None:
    """The API's message on one line, then its details (row, column, message) as a table."""
    err.print(f"imgbatch: {failure.message} ({failure.code}, HTTP {failure.status})")
    if not failure.details:
        return
    table = Table(title=None, show_edge=False, pad_edge=False, expand=False)
    table.add_column("Row", justify="right")
    table.add_column("Column")
    table.add_column("Message", overflow="fold")
    for detail in failure.details:
        row = detail.get("row")
        column = detail.get("column") or detail.get("field") or "-"
        table.add_row("-" if row is None else str(row), str(column), str(detail.get("message", "")))
    err.print(table)


def savings_line(savings: dict[str, Any] | None) -> str:
    s = savings or {}
    if not s.get("images"):
        return "bytes: nothing compressed"
    return (
        f"bytes: {size(s['bytes_in'])} → {size(s['bytes_out'])}, {s['saved_percent']:.1f} % saved"
    )


def images_line(doc: dict[str, Any]) -> str:
    p = doc["progress"]
    line = f"images: {p['succeeded']} done, {p.get('failed', 0)} failed"
    if p.get("cancelled"):
        line += f", {p['cancelled']} cancelled"
    if doc["status"] not in FINAL and p.get("pending"):
        line += f", {p['pending']} to go"
    return line


def progress_line(doc: dict[str, Any]) -> str:
    """One line for logs and answers: status, then the images line."""
    return f"{doc['status']}, {images_line(doc)}"


def failure_lines(rows: Iterable[dict[str, str]], limit: int) -> Iterator[str]:
    """One line per failed image of images.csv rows: serial number, URL, reason code and message."""
    for count, row in enumerate((r for r in rows if r["Status"] == "failed"), start=1):
        if count > limit:
            return
        yield (
            f"failed: S. No. {row['S. No.']} {row['Input Image Url']} "
            f"{row['Error Code']}: {row['Error Message']}"
        )


def print_summary(doc: dict[str, Any], failures: Iterable[str], more: int) -> None:
    """The outcome: status, images done/failed, bytes in → out and % saved, each failed image."""
    out.print(f"status: {doc['status']}")
    out.print(images_line(doc))
    out.print(savings_line(doc.get("savings")))
    for line in failures:
        out.print(line)
    if more > 0:
        out.print(f"failed: … and {more} more (imgbatch download ID --images-csv F lists them all)")


def print_requests(page: dict[str, Any]) -> None:
    table = Table(show_edge=False, pad_edge=False)
    for name, justify in (
        ("Request", "left"),
        ("File", "left"),
        ("Status", "left"),
        ("Done", "right"),
        ("Images", "right"),
        ("Saved", "right"),
        ("Created", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for item in page["requests"]:
        savings = item.get("savings") or {}
        progress = item.get("progress") or {}
        table.add_row(
            item["request_id"],
            item.get("filename") or "-",
            item["status"],
            f"{progress.get('percent', 0):.0f}%",
            str(item.get("images", "")),
            f"{savings['saved_percent']:.1f}%" if savings.get("images") else "-",
            str(item.get("created_at") or "")[:19].replace("T", " "),
        )
    if page["requests"]:
        out.print(table)
    else:
        err.print("no requests")
    if page.get("next_cursor"):
        err.print(f"more: imgbatch requests --cursor {page['next_cursor']}")
