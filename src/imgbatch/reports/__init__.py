"""The read side: status documents and exports built from the ledger.

Holds: `status` (the status document, request lookup with ownership, output rows),
`history` (a caller's requests, newest first).
May import: the ledger, webhooks' read models, the catalogue's output rows, `imgbatch.context`.
Never the jobs, intake or the ways in.
"""

from __future__ import annotations

from .history import history_document
from .inputs import image_input_url
from .status import (
    get_request,
    image_document,
    iter_image_rows,
    iter_output_rows,
    request_options,
    status_document,
)

__all__ = [
    "get_request",
    "history_document",
    "image_document",
    "image_input_url",
    "iter_image_rows",
    "iter_output_rows",
    "request_options",
    "status_document",
]
