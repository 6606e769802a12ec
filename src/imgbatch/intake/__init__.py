"""Accepting an upload: a validated CSV becomes a request in the ledger, then jobs on the queue.

Holds: `fields` (the accepted upload options and their aliases; unknown names refused),
`upload` (options parsing, the upload transaction, enqueue after commit).
May import: the catalogue (parsing), the ledger, fetching (URL checks), imaging (formats),
`imgbatch.context`. Never the jobs, reports or the ways in.
"""

from __future__ import annotations

from .fields import UPLOAD_FIELDS, accepted_fields, upload_options
from .upload import (
    OUTPUT_FORMATS,
    accept_upload,
    clean_filename,
    parse_format,
    parse_quality,
    parse_side,
    validate_webhook_url,
)

__all__ = [
    "OUTPUT_FORMATS",
    "UPLOAD_FIELDS",
    "accept_upload",
    "accepted_fields",
    "clean_filename",
    "parse_format",
    "parse_quality",
    "parse_side",
    "upload_options",
    "validate_webhook_url",
]
