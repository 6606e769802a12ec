"""The product CSV, in and out: pure functions, no I/O.

Holds: `parsing` (bytes of an uploaded CSV → validated `ProductRow`s, or every problem with its
row) and `output` (the output CSV's rows and formula-safe cells).
May import: the standard library and `imgbatch.errors`/`imgbatch.config` only. Nothing here
touches a database, a queue, the network or the disk, so every rule tests without servers.
"""

from __future__ import annotations

from .output import (
    IMAGES_HEADER,
    OUTPUT_HEADER,
    ImageRow,
    OutputRow,
    escape_cell,
    iter_images_csv,
    iter_output_csv,
)
from .parsing import CsvIssue, CsvLimits, CsvRejected, ProductRow, parse_products

__all__ = [
    "IMAGES_HEADER",
    "OUTPUT_HEADER",
    "CsvIssue",
    "CsvLimits",
    "CsvRejected",
    "ImageRow",
    "OutputRow",
    "ProductRow",
    "escape_cell",
    "iter_images_csv",
    "iter_output_csv",
    "parse_products",
]
