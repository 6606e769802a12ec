"""The read side: status documents and exports built from the ledger.

Holds: `status` (the status document, request lookup with ownership, output rows),
`history` (a caller's requests, newest first), `images_zip` (a request's images and output
CSV as one ZIP) over `zipstream` (a streamed ZIP writer, pure).
May import: the ledger, webhooks' read models, the catalogue's output rows, `imgbatch.context`.
Never the jobs, intake or the ways in.
"""

from __future__ import annotations

from .history import history_document
from .images_zip import iter_images_zip
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
    "iter_images_zip",
    "iter_output_rows",
    "request_options",
    "status_document",
]
