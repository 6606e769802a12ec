"""The output CSVs: one row per product (input URLs beside the compressed ones), and
one row per image with what became of it (`images.csv`).

Pure, no I/O, and apart from `parsing` (the upload side) because writing shares
nothing with parsing but the column names. Cells are escaped so a spreadsheet
never runs a product name or URL as a formula.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

OUTPUT_HEADER = ("S. No.", "Product Name", "Input Image Urls", "Output Image Urls")
IMAGES_HEADER = (
    "S. No.",
    "Product Name",
    "Position",
    "Input Image Url",
    "Output Image Url",
    "Status",
    "Error Code",
    "Error Message",
    "Input Bytes",
    "Output Bytes",
    "Saved Percent",
    "Width",
    "Height",
    "Format",
    "Quality",
)

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Fullwidth forms of = + - @: some spreadsheets read them as the ASCII ones.
_FULLWIDTH_PREFIXES = ("\uff1d", "\uff0b", "\uff0d", "\uff20")
# Characters a spreadsheet may skip before deciding a cell is a formula: format characters
# (zero-width space U+200B, BOM U+FEFF, Mongolian vowel separator U+180E, bidi marks, word
# joiner), spaces and separators of every kind, controls, and the Hangul fillers.
_INVISIBLE_CATEGORIES = ("Cf", "Cc", "Zs", "Zl", "Zp")
_INVISIBLE_EXTRA = frozenset("\u115f\u1160\u3164\uffa0\u034f")
_CHUNK_CHARS = 64 * 1024


@dataclass(frozen=True)
class OutputRow:
    """One product of the output CSV; `output_urls[i]` is None when image i failed."""

    serial_number: int
    product_name: str
    input_urls: Sequence[str]
    output_urls: Sequence[str | None]

    def __post_init__(self) -> None:
        # Misaligned lists would silently pair images with the wrong outputs.
        if len(self.input_urls) != len(self.output_urls):
            raise ValueError(
                f"S. No. {self.serial_number}: {len(self.input_urls)} input URLs "
                f"but {len(self.output_urls)} output URLs"
            )


@dataclass(frozen=True)
class ImageRow:
    """One image of `images.csv`; None prints as an empty cell. `position` counts from 1."""

    serial_number: int
    product_name: str
    position: int
    input_url: str
    output_url: str | None
    status: str
    error_code: str | None
    error_message: str | None
    bytes_in: int | None
    bytes_out: int | None
    saved_percent: float | None
    width: int | None
    height: int | None
    format: str | None
    quality: int | None


def _invisible(char: str) -> bool:
    return unicodedata.category(char) in _INVISIBLE_CATEGORIES or char in _INVISIBLE_EXTRA


def escape_cell(value: str) -> str:
    """Prefix `'` so a spreadsheet shows the text instead of running it as a formula (OWASP).

    A cell counts as a formula when it starts with `= + - @`, a tab or CR, or their
    fullwidth forms, also behind any run of invisible characters (U+200B, U+FEFF,
    spaces...), which a spreadsheet may skip; the text itself is kept unchanged.
    """
    if value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    start = 0
    while start < len(value) and _invisible(value[start]):
        start += 1
    if value.startswith(_FORMULA_PREFIXES + _FULLWIDTH_PREFIXES, start):
        return "'" + value
    return value


def iter_output_csv(rows: Iterable[OutputRow]) -> Iterator[str]:
    """The output CSV as text chunks: the header alone first, then rows in ~64 KiB chunks.

    Rows are read lazily, so a response can stream a large batch without holding it.
    """
    return _chunks(OUTPUT_HEADER, (_output_cells(row) for row in rows))


def iter_images_csv(rows: Iterable[ImageRow]) -> Iterator[str]:
    """`images.csv` as text chunks, streamed like the output CSV."""
    return _chunks(IMAGES_HEADER, (_image_cells(row) for row in rows))


def _chunks(header: Sequence[str], rows: Iterable[list[str]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    yield _drain(buffer)
    for cells in rows:
        writer.writerow(cells)
        if buffer.tell() >= _CHUNK_CHARS:
            yield _drain(buffer)
    if buffer.tell():
        yield _drain(buffer)


def _image_cells(row: ImageRow) -> list[str]:
    cells = (
        int(row.serial_number),
        row.product_name,
        row.position,
        row.input_url,
        row.output_url,
        row.status,
        row.error_code,
        row.error_message,
        row.bytes_in,
        row.bytes_out,
        None if row.saved_percent is None else f"{row.saved_percent:.1f}",
        row.width,
        row.height,
        row.format,
        row.quality,
    )
    return [escape_cell("" if cell is None else str(cell)) for cell in cells]


def _output_cells(row: OutputRow) -> list[str]:
    cells = (
        str(int(row.serial_number)),
        row.product_name,
        ",".join(row.input_urls),
        ",".join(url or "" for url in row.output_urls),
    )
    return [escape_cell(cell) for cell in cells]


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate(0)
    return text
