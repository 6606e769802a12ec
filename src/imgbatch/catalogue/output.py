"""The output CSV: one row per product, its input URLs beside the compressed ones.

Pure, no I/O, and apart from `parsing` (the upload side) because writing shares
nothing with parsing but the column names. Cells are escaped so a spreadsheet
never runs a product name or URL as a formula.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

OUTPUT_HEADER = ("S. No.", "Product Name", "Input Image Urls", "Output Image Urls")

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
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


def escape_cell(value: str) -> str:
    """Prefix `'` so a spreadsheet shows the text instead of running it as a formula (OWASP)."""
    return "'" + value if value.startswith(_FORMULA_PREFIXES) else value


def iter_output_csv(rows: Iterable[OutputRow]) -> Iterator[str]:
    """The output CSV as text chunks: the header alone first, then rows in ~64 KiB chunks.

    Rows are read lazily, so a response can stream a large batch without holding it.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(OUTPUT_HEADER)
    yield _drain(buffer)
    for row in rows:
        writer.writerow(_output_cells(row))
        if buffer.tell() >= _CHUNK_CHARS:
            yield _drain(buffer)
    if buffer.tell():
        yield _drain(buffer)


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
