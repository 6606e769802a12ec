"""The image-URL cell: the shapes people write it in, and what makes one URL acceptable.

Accepted shapes of one cell:
- comma-separated URLs, with spaces or line breaks around the commas;
- URLs separated by spaces or line breaks only (every piece must then look like
  a URL, so `https://a/my photo.jpg` is still reported as a URL with a space);
- a Python list as `str(list)` writes it, `['https://a/1.jpg', 'https://a/2.jpg']`,
  or a JSON array, `["https://a/1.jpg","https://a/2.jpg"]` (pandas exports).

Lists are read by a flat tokenizer, never `eval`, `ast.literal_eval` or a
recursive parser: a cell of a hundred thousand `[` is one refusal, not a
RecursionError.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

LOOKS_LIKE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Whitespace, control and invisible formatting characters (bidi overrides, zero-width).
_BAD_URL_CHAR = re.compile(
    r"[\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)
# One list item: a "JSON" string, a 'Python' string or bare text, then a comma or the end.
_LIST_ITEM = re.compile(
    r"""\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^,'"\[\]\s][^,'"\[\]]*?))\s*(?:,|\Z)""",
    re.DOTALL,
)
_PY_ESCAPE = re.compile(r"\\([\\'\"])")


class BadCell(ValueError):
    """The cell cannot be read as URLs; the message says why, for the user."""


def is_list_cell(cell: str) -> bool:
    return cell.startswith("[") and cell.endswith("]")


def split_urls(cell: str) -> list[str]:
    """The URLs of one cell, in order; raises `BadCell` for a list that cannot be read.

    Empty pieces (a trailing comma, stray spaces, `[]`) are dropped; the caller
    decides whether no URL at all is an error.
    """
    cell = cell.strip()
    if is_list_cell(cell):
        return _list_items(cell)
    urls: list[str] = []
    for piece in cell.split(","):
        words = piece.split()
        if len(words) > 1 and all(LOOKS_LIKE_URL.match(word) for word in words):
            urls += words
        elif piece.strip():
            urls.append(piece.strip())
    return urls


def _list_items(cell: str) -> list[str]:
    inner = cell[1:-1]
    items: list[str] = []
    position = 0
    while inner[position:].strip():
        match = _LIST_ITEM.match(inner, position)
        if match is None or match.end() == position:
            raise BadCell(
                "looks like a list but is not a flat list of quoted URLs "
                "(write ['https://a/1.jpg', 'https://a/2.jpg'] or comma-separated URLs)"
            )
        double, single, bare = match.groups()
        if double is not None:
            try:
                item = json.loads(f'"{double}"')
            except ValueError:
                raise BadCell("looks like a JSON list but has a bad escape in a string") from None
        elif single is not None:
            item = _PY_ESCAPE.sub(r"\1", single)
        else:
            item = bare
        if item.strip():
            items.append(item.strip())
        position = match.end()
    return items


def url_problem(url: str, max_length: int) -> str | None:
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
