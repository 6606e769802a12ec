"""The header row: which spellings name which column, and the exact refusal when one does not.

People's CSV files come from spreadsheets, pandas and other tools, so the same
column arrives as `S_No`, `serialNumber`, `Input Images` or `Image Links`. A
heading is reduced to a key (`header_key`: lower case, only letters and digits,
each word made singular) and compared with the keys of the spellings listed
here, so `Image URLs`, `image_url` and `imageUrls` are one spelling. The lists
are also what a refusal names, so a user sees every accepted spelling.

A trailing output column (any spelling of `Output Image Urls`) is allowed and
ignored: it makes imgbatch's own output CSV, or a peer's, a valid input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .problems import CsvIssue, CsvRejected, preview

SERIAL = "S. No."
NAME = "Product Name"
URLS = "Input Image Urls"
OUTPUT = "Output Image Urls"
INPUT_HEADER = (SERIAL, NAME, URLS)

SPELLINGS: dict[str, tuple[str, ...]] = {
    SERIAL: (
        "S. No.",
        "S.No",
        "Sr. No.",
        "Sl. No.",
        "S/N",
        "Serial",
        "Serial No",
        "Serial Number",
        "No.",
        "Number",
        "#",
    ),
    NAME: ("Product Name", "Product", "Name", "Product Title", "Title", "Item Name", "Item", "SKU"),
    URLS: (
        "Input Image Urls",
        "Input Image Links",
        "Input Images",
        "Input Urls",
        "Input Links",
        "Image Urls",
        "Image Links",
        "Images",
        "Product Image Urls",
        "Product Image Links",
        "Product Images",
        "Photo Urls",
        "Photos",
        "Picture Urls",
        "Pictures",
        "Urls",
        "Links",
    ),
    OUTPUT: (
        "Output Image Urls",
        "Output Image Links",
        "Output Images",
        "Output Urls",
        "Output Links",
        "Compressed Image Urls",
        "Compressed Images",
    ),
}
IGNORED = "case, spaces, punctuation, underscores and plurals do not matter"

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_WORD = re.compile(r"[^\W_]+")


def _singular(word: str) -> str:
    return word[:-1] if len(word) >= 3 and word.endswith("s") and not word.endswith("ss") else word


def header_key(cell: str) -> str:
    """`Input_Image_URLs`, `inputImageUrl`, `input image urls` → `inputimageurl`.

    Words are split at punctuation, spaces, underscores and camelCase, made
    singular (a trailing `s`), and joined; `#` reads as "No".
    """
    text = _CAMEL.sub(" ", cell.replace("#", " No "))
    return "".join(_singular(word) for word in _WORD.findall(text.lower()))


_COLUMN_OF: dict[str, str] = {
    header_key(spelling): column
    for column, spellings in SPELLINGS.items()
    for spelling in spellings
}


def column_of(cell: str) -> str | None:
    """The column a heading names (`SERIAL`, `NAME`, `URLS`, `OUTPUT`), or None."""
    return _COLUMN_OF.get(header_key(cell))


def accepted(column: str) -> str:
    """The accepted spellings of `column`, for messages."""
    return f"accepted spellings: {', '.join(SPELLINGS[column])} ({IGNORED})"


@dataclass(frozen=True)
class Header:
    """The columns a valid header declared: the three input columns, maybe an output one."""

    has_output: bool = False

    @property
    def width(self) -> int:
        return 4 if self.has_output else 3


def read_header(cells: list[str], row: int, *, looks_like_data: bool = False) -> Header:
    """Recognise the header row, or raise `400 bad_header` naming every column not recognised.

    `cells` are stripped, without trailing empty cells beyond the third.
    `looks_like_data` adds a hint that the header row may be missing.
    """
    found = cells + [""] * (3 - len(cells))
    issues: list[CsvIssue] = []
    for i, (column, cell) in enumerate(zip(INPUT_HEADER, found, strict=False)):
        named = column_of(cell)
        if named == column:
            continue
        if named is not None:
            message = (
                f"Column {i + 1} is {preview(cell)}, the {named} column; the columns must be "
                f"{', '.join(INPUT_HEADER)} in this order (then optionally {OUTPUT})."
            )
        else:
            what = f"is {preview(cell)}" if cell else "is empty"
            message = f"Column {i + 1} {what}, not a {column} heading; {accepted(column)}."
        issues.append(CsvIssue(row, column, message))
    extras = found[3:]
    has_output = bool(extras) and column_of(extras[0]) == OUTPUT
    for i, cell in enumerate(extras[1:] if has_output else extras, start=5 if has_output else 4):
        issues.append(
            CsvIssue(
                row,
                None,
                f"Unexpected extra column {i}: {preview(cell)}. Only an {OUTPUT} column "
                f"(ignored) may follow {URLS}; {accepted(OUTPUT)}.",
            )
        )
    if issues:
        shown = " ".join(issue.message for issue in issues[:3])
        more = f" (and {len(issues) - 3} more)" if len(issues) > 3 else ""
        hint = " The first row looks like data: add the header row." if looks_like_data else ""
        raise CsvRejected(
            400,
            "bad_header",
            f"The first row must be the header {', '.join(INPUT_HEADER)}: {shown}{more}{hint}",
            issues,
        )
    return Header(has_output=has_output)
