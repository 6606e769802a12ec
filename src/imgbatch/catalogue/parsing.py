"""The product CSV upload: parse and validate it (the output CSV is `output`).

Pure functions over bytes and strings, no I/O. Parsing refuses hostile input
(too big, binary, archives, absurd quoting) with a `CsvRejected` that carries an
HTTP status and a stable code, and checks every limit before doing the work the
limit protects. Validation is all-or-nothing: every problem is collected with its
spreadsheet row number so a user can fix the file in one go.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .cells import LOOKS_LIKE_URL, BadCell, is_list_cell, split_urls, url_problem
from .headers import NAME, SERIAL, URLS, Header, read_header
from .problems import CsvIssue, CsvRejected, preview

__all__ = ["CsvIssue", "CsvLimits", "CsvRejected", "ProductRow", "parse_products"]

# Leading bytes of formats people upload by mistake (or on purpose: a zip bomb).
# Refused on sight, so nothing is ever decompressed.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (or an Excel .xlsx workbook)"),
    (b"PK\x05\x06", "a zip archive"),
    (b"PK\x07\x08", "a zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel .xls workbook"),
)
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# Text never holds these; tab, LF, VT, FF and CR are allowed.
_BINARY_BYTE = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")

_SERIAL_RE = re.compile(r"([0-9]{1,18})(?:\.0*)?")

_field_limit_lock = threading.Lock()


@dataclass(frozen=True)
class CsvLimits:
    """Caps on an upload; each is checked before the work it protects."""

    max_bytes: int = 20 * 1024 * 1024
    max_rows: int = 50_000
    max_urls_per_row: int = 50
    max_url_length: int = 2048
    max_cell_chars: int = 200_000
    max_columns: int = 60
    max_images: int = 100_000  # image URLs in the whole file
    max_errors: int = 100


@dataclass(frozen=True)
class ProductRow:
    """One valid product; `row` is the spreadsheet row (header is row 1)."""

    row: int
    serial_number: int
    product_name: str
    urls: tuple[str, ...]


# --- parsing -------------------------------------------------------------------


def parse_products(data: bytes, limits: CsvLimits = CsvLimits()) -> list[ProductRow]:
    """Parse and validate an uploaded CSV, or raise `CsvRejected` (never anything else)."""
    data = bytes(data)
    _check_envelope(data, limits)
    _ensure_field_limit(limits.max_cell_chars)
    with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="") as text:
        feed = _LineFeed(text, _max_row_chars(limits))
        reader = csv.reader(feed, strict=True, skipinitialspace=True)
        return _parse_records(_records(reader, feed, data, limits), limits)


def _check_envelope(data: bytes, limits: CsvLimits) -> None:
    """Refuse what is too big or not text at all, before decoding a byte."""
    if len(data) > limits.max_bytes:
        raise CsvRejected(
            413,
            "too_large",
            f"The file is {len(data)} bytes; the limit is {limits.max_bytes} bytes.",
        )
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            raise CsvRejected(
                415, "not_csv", f"This looks like {kind}, not a CSV file. Upload a .csv file."
            )
    if data.startswith(_UTF16_BOMS):
        raise CsvRejected(
            400, "bad_encoding", "The file is UTF-16 text. Save it as 'CSV UTF-8' and upload again."
        )
    binary = _BINARY_BYTE.search(data)
    if binary is not None:
        line = data.count(b"\n", 0, binary.start()) + 1
        raise CsvRejected(
            415,
            "not_csv",
            f"The file contains binary data (byte {binary.group()[0]:#04x} on line {line}); "
            "it is not a CSV text file.",
        )


def _bad_encoding(data: bytes) -> CsvRejected:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = f" (first bad byte on line {line})"
    else:  # pragma: no cover - only called after a decode error
        where = ""
    return CsvRejected(
        400,
        "bad_encoding",
        f"The file is not valid UTF-8{where}. Save it as 'CSV UTF-8' and upload again.",
    )


def _ensure_field_limit(chars: int) -> None:
    """Let the csv module read cells up to `chars` long.

    `csv.field_size_limit` is process-global, so it is only ever raised (under a
    lock), never lowered: a concurrent parse can't be cut short by ours. Cell
    length is then checked per row against the caller's own limit.
    """
    with _field_limit_lock:
        if csv.field_size_limit() < chars:
            csv.field_size_limit(chars)


def _max_row_chars(limits: CsvLimits) -> int:
    """The longest raw row that could still be valid: a fully quoted name plus every URL.

    A longer row is refused before the csv module splits it, so a megabyte of
    commas can't become a million-cell list.
    """
    urls = limits.max_urls_per_row * (limits.max_url_length + 3)
    return 2 * limits.max_cell_chars + urls + 4 * limits.max_columns + 1024


class _RowTooLong(Exception):
    pass


class _LineFeed:
    """Lines for the csv reader: trailing spaces dropped, each row's length capped."""

    def __init__(self, lines: Iterable[str], max_chars: int) -> None:
        self._lines = iter(lines)
        self._max_chars = max_chars
        self._used = 0

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._used += len(line)
        if self._used > self._max_chars:
            raise _RowTooLong
        body = line.rstrip("\r\n")
        # Spaces after a closing quote would otherwise be a strict-mode error.
        return body.rstrip(" \t") + line[len(body) :]

    def row_done(self) -> None:
        self._used = 0


def _records(
    reader: Iterator[list[str]], feed: _LineFeed, data: bytes, limits: CsvLimits
) -> Iterator[tuple[int, list[str]]]:
    """Yield (spreadsheet row, cells), turning reader failures into `CsvRejected`."""
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise _bad_encoding(data) from None
        except _RowTooLong:
            raise _malformed(
                row + 1,
                f"Row {row + 1} is longer than any valid row "
                f"({_max_row_chars(limits)} characters). Is a quote left open?",
            ) from None
        except csv.Error as exc:
            raise _malformed(row + 1, _explain_csv_error(str(exc), row + 1, limits)) from None
        row += 1
        feed.row_done()
        yield row, cells


def _explain_csv_error(error: str, row: int, limits: CsvLimits) -> str:
    if "field larger than field limit" in error:
        return (
            f"A cell in row {row} is longer than {limits.max_cell_chars} characters. "
            "Is a quote left open?"
        )
    if "unexpected end of data" in error:
        return f'A quoted cell starting in row {row} is never closed (missing ").'
    if "expected after" in error:
        return (
            f"Unexpected text after a closing quote in row {row}. A quoted cell must be "
            'followed by a comma or the end of the line; write a quote inside it as "".'
        )
    return f"Row {row} cannot be read as CSV: {error}."


def _malformed(row: int, message: str) -> CsvRejected:
    return CsvRejected(400, "malformed_csv", message, [CsvIssue(row, None, message)])


def _parse_records(records: Iterable[tuple[int, list[str]]], limits: CsvLimits) -> list[ProductRow]:
    products: list[ProductRow] = []
    issues: list[CsvIssue] = []
    first_row_of: dict[int, int] = {}
    header: Header | None = None
    count = images = 0
    for row, cells in records:
        if not any(cell.strip() for cell in cells):
            continue  # blank rows (and `,,` rows from spreadsheets) are skipped
        _check_shape(cells, row, limits)
        if header is None:
            found = _drop_trailing_empty([cell.strip() for cell in cells])
            header = read_header(found, row, looks_like_data=_parse_serial(found[0]) is not None)
            continue
        count += 1
        if count > limits.max_rows:
            raise CsvRejected(
                413,
                "too_many_rows",
                f"The file has more than {limits.max_rows} product rows. "
                "Split it into smaller files.",
            )
        serial, product, row_issues = _check_row(cells, row, header, limits)
        if serial is not None:
            first = first_row_of.setdefault(serial, row)
            if first != row:
                message = f"S. No. {serial} appears in rows {first} and {row}."
                row_issues.insert(0, CsvIssue(row, SERIAL, message))
        for issue in row_issues:
            if len(issues) >= limits.max_errors:
                raise _validation_failed(issues, omitted=True)
            issues.append(issue)
        if product is not None and not row_issues:
            products.append(product)
            images += len(product.urls)
            if images > limits.max_images:
                raise CsvRejected(
                    413,
                    "too_many_images",
                    f"The file has more than {limits.max_images} image URLs (row {row} is past "
                    "the limit). Split it into smaller files.",
                )
    if header is None:
        raise CsvRejected(422, "empty_csv", "The file is empty.")
    if count == 0:
        raise CsvRejected(422, "empty_csv", "The file has a header but no product rows.")
    if issues:
        raise _validation_failed(issues, omitted=False)
    return products


def _validation_failed(issues: list[CsvIssue], *, omitted: bool) -> CsvRejected:
    if omitted:
        message = (
            f"Found more than {len(issues)} problems; showing the first {len(issues)} "
            "(the rest were omitted). Nothing was imported."
        )
    else:
        message = f"Found {len(issues)} problem(s) in the file. Nothing was imported."
    return CsvRejected(422, "validation_failed", message, issues)


def _check_shape(cells: list[str], row: int, limits: CsvLimits) -> None:
    """Refuse rows no valid file has: too many columns, or a huge cell."""
    if len(cells) > limits.max_columns:
        raise _malformed(
            row, f"Row {row} has {len(cells)} columns; at most {limits.max_columns} are allowed."
        )
    if any(len(cell) > limits.max_cell_chars for cell in cells):
        raise _malformed(
            row, f"A cell in row {row} is longer than {limits.max_cell_chars} characters."
        )


def _check_row(
    cells: list[str], row: int, header: Header, limits: CsvLimits
) -> tuple[int | None, ProductRow | None, list[CsvIssue]]:
    """Validate one product row: its serial (for duplicate checks), the product, the problems."""
    cells = _drop_trailing_empty([cell.strip() for cell in cells])
    cells += [""] * (3 - len(cells))
    serial_cell, name, *url_cells = cells
    issues: list[CsvIssue] = []

    serial = _parse_serial(serial_cell)
    if serial is None:
        what = f"got {preview(serial_cell)}" if serial_cell else "it is empty"
        issues.append(CsvIssue(row, SERIAL, f"S. No. must be a whole number like 1 or 1.; {what}."))
    if not name:
        issues.append(CsvIssue(row, NAME, "Product Name is empty."))

    url_cells, shape_issue = _url_cells(url_cells, row, header)
    if shape_issue is not None:
        issues.append(shape_issue)
    urls: list[str] = []
    for cell in url_cells:
        try:
            urls += split_urls(cell)
        except BadCell as bad:
            issues.append(CsvIssue(row, URLS, f"The image URL cell {preview(cell)} {bad}."))
            break
    else:
        issues += _url_issues(urls, row, limits)

    if issues or serial is None:
        return serial, None, issues
    return serial, ProductRow(row, serial, name, tuple(urls)), issues


def _url_cells(cells: list[str], row: int, header: Header) -> tuple[list[str], CsvIssue | None]:
    """The cells holding this row's input URLs, and an issue if the row has a bad shape.

    Without an output column, URLs that spilled into extra cells (an unquoted
    cell) are taken when every extra cell is a URL, and a list split by the
    same mistake (`['a'`, ` 'b']`) is put back together. With an output column,
    the fourth cell is the output and is ignored, and a longer row is refused:
    spilled URLs and outputs could no longer be told apart.
    """
    if header.has_output:
        if len(cells) <= 2:
            return cells[:1], None
        return cells[:1], _too_wide(row, len(cells) + 2, header)
    if len(cells) > 1 and cells[0].startswith("[") and cells[-1].endswith("]"):
        joined = ",".join(cells)
        if is_list_cell(joined):
            return [joined], None
    if all(LOOKS_LIKE_URL.match(cell) for cell in cells[1:]):
        return cells, None
    return cells[:1], _too_wide(row, len(cells) + 2, header)


def _too_wide(row: int, columns: int, header: Header) -> CsvIssue:
    return CsvIssue(
        row,
        URLS,
        f"Row has {columns} columns but {header.width} are expected. Put all image URLs in one "
        'quoted cell: "https://a.jpg,https://b.jpg".',
    )


def _drop_trailing_empty(cells: list[str]) -> list[str]:
    while len(cells) > 3 and not cells[-1]:
        cells.pop()
    return cells


def _parse_serial(text: str) -> int | None:
    """An integer, optionally written `1.` or `1.0` as spreadsheets do; ASCII digits only."""
    match = _SERIAL_RE.fullmatch(text)
    return int(match.group(1)) if match else None


def _url_issues(urls: list[str], row: int, limits: CsvLimits) -> list[CsvIssue]:
    if not urls:
        return [CsvIssue(row, URLS, "At least one image URL is required.")]
    if len(urls) > limits.max_urls_per_row:
        return [
            CsvIssue(
                row,
                URLS,
                f"{len(urls)} image URLs; at most {limits.max_urls_per_row} are allowed per row.",
            )
        ]
    issues = []
    for i, url in enumerate(urls, start=1):
        problem = url_problem(url, limits.max_url_length)
        if problem is not None:
            issues.append(CsvIssue(row, URLS, f"URL {i} {preview(url)} {problem}."))
    return issues
