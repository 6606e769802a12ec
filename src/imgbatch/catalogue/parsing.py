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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

SERIAL = "S. No."
NAME = "Product Name"
URLS = "Input Image Urls"
INPUT_HEADER = (SERIAL, NAME, URLS)

# Header cells are compared after `_normalise_header`.
_HEADER_SPELLINGS: tuple[frozenset[str], ...] = (
    frozenset({"sno", "srno", "slno", "serialno", "serialnumber"}),
    frozenset({"productname"}),
    frozenset({"inputimageurls", "inputimageurl", "imageurls", "imageurl"}),
)
_HEADER_EXAMPLES = (
    "S. No., S.No, Sr. No., Serial Number, Serial No",
    "Product Name",
    "Input Image Urls, Input Image URLs, Image Urls",
)

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
_LOOKS_LIKE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Whitespace, control and invisible formatting characters (bidi overrides, zero-width).
_BAD_URL_CHAR = re.compile(
    r"[\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)
_PREVIEW_CHARS = 80

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
    max_errors: int = 100


@dataclass(frozen=True)
class ProductRow:
    """One valid product; `row` is the spreadsheet row (header is row 1)."""

    row: int
    serial_number: int
    product_name: str
    urls: tuple[str, ...]


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
    header_seen = False
    count = 0
    for row, cells in records:
        if not any(cell.strip() for cell in cells):
            continue  # blank rows (and `,,` rows from spreadsheets) are skipped
        _check_shape(cells, row, limits)
        if not header_seen:
            _check_header(cells, row)
            header_seen = True
            continue
        count += 1
        if count > limits.max_rows:
            raise CsvRejected(
                413,
                "too_many_rows",
                f"The file has more than {limits.max_rows} product rows. "
                "Split it into smaller files.",
            )
        serial, product, row_issues = _check_row(cells, row, limits)
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
    if not header_seen:
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


def _normalise_header(cell: str) -> str:
    return "".join(ch for ch in cell.lower() if not ch.isspace() and ch not in "._-\ufeff")


def _check_header(cells: list[str], row: int) -> None:
    found = _drop_trailing_empty([cell.strip() for cell in cells])
    issues = [
        CsvIssue(
            row, column, f"Column {i + 1} is {_preview(cell)}; expected {column} ({examples})."
        )
        for i, (column, spellings, examples, cell) in enumerate(
            zip(INPUT_HEADER, _HEADER_SPELLINGS, _HEADER_EXAMPLES, found + [""] * 3, strict=False)
        )
        if _normalise_header(cell) not in spellings
    ]
    issues += [
        CsvIssue(row, None, f"Unexpected extra column {i + 1}: {_preview(cell)}.")
        for i, cell in enumerate(found[3:], start=3)
    ]
    if issues:
        hint = (
            " The first row looks like data: add the header row." if _parse_serial(found[0]) else ""
        )
        raise CsvRejected(
            400,
            "bad_header",
            f"The first row must be the header {', '.join(INPUT_HEADER)}; "
            f"found {', '.join(_preview(cell) for cell in found) or 'nothing'}.{hint}",
            issues,
        )


def _check_row(
    cells: list[str], row: int, limits: CsvLimits
) -> tuple[int | None, ProductRow | None, list[CsvIssue]]:
    """Validate one product row: its serial (for duplicate checks), the product, the problems."""
    cells = _drop_trailing_empty([cell.strip() for cell in cells])
    cells += [""] * (3 - len(cells))
    serial_cell, name, *url_cells = cells
    issues: list[CsvIssue] = []

    serial = _parse_serial(serial_cell)
    if serial is None:
        what = f"got {_preview(serial_cell)}" if serial_cell else "it is empty"
        issues.append(CsvIssue(row, SERIAL, f"S. No. must be a whole number like 1 or 1.; {what}."))
    if not name:
        issues.append(CsvIssue(row, NAME, "Product Name is empty."))

    extras = url_cells[1:]
    if not all(_LOOKS_LIKE_URL.match(cell) for cell in extras):
        issues.append(
            CsvIssue(
                row,
                URLS,
                f"Row has {len(cells)} columns but 3 are expected. Put all image URLs in one "
                'quoted cell: "https://a.jpg,https://b.jpg".',
            )
        )
        url_cells = url_cells[:1]
    urls = [url for cell in url_cells for url in _split_urls(cell)]
    issues += _url_issues(urls, row, limits)

    if issues or serial is None:
        return serial, None, issues
    return serial, ProductRow(row, serial, name, tuple(urls)), issues


def _drop_trailing_empty(cells: list[str]) -> list[str]:
    while len(cells) > 3 and not cells[-1]:
        cells.pop()
    return cells


def _parse_serial(text: str) -> int | None:
    """An integer, optionally written `1.` or `1.0` as spreadsheets do; ASCII digits only."""
    match = _SERIAL_RE.fullmatch(text)
    return int(match.group(1)) if match else None


def _split_urls(cell: str) -> list[str]:
    """URLs of one cell; empty pieces (a trailing comma, stray spaces) are ignored."""
    return [piece.strip() for piece in cell.split(",") if piece.strip()]


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
        problem = _url_problem(url, limits.max_url_length)
        if problem is not None:
            issues.append(CsvIssue(row, URLS, f"URL {i} {_preview(url)} {problem}."))
    return issues


def _url_problem(url: str, max_length: int = CsvLimits.max_url_length) -> str | None:
    """Why `url` is not an acceptable image URL, or None when it is."""
    if len(url) > max_length:
        return f"is longer than {max_length} characters"
    if _BAD_URL_CHAR.search(url):
        return "contains whitespace or control characters (separate URLs with commas)"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an absolute URL starting with http:// or https://"
    if not parts.hostname:
        return "has no host name"
    return None


def _preview(value: str) -> str:
    """A value quoted for a message, cut short so errors never echo a huge cell."""
    if len(value) > _PREVIEW_CHARS:
        value = value[:_PREVIEW_CHARS] + "…"
    return repr(value)
