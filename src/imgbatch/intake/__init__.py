"""Accepting an upload: a validated CSV becomes a request in the ledger, then jobs on the queue.

Holds: `fields` (the accepted upload options and their aliases; unknown names refused),
`upload` (options parsing, the upload transaction, enqueue after commit).
May import: the catalogue (parsing), the ledger, fetching (URL checks), imaging (formats),
`imgbatch.context`. Never the jobs, reports or the ways in.
"""

from __future__ import annotations

from .fields import UPLOAD_FIELDS, accepted_fields, upload_options
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import KEY_PATTERN as IDEMPOTENCY_KEY_PATTERN
from .idempotency import REPLAYED_HEADER, UploadKey, check_key
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
    "IDEMPOTENCY_HEADER",
    "IDEMPOTENCY_KEY_PATTERN",
    "OUTPUT_FORMATS",
    "REPLAYED_HEADER",
    "UPLOAD_FIELDS",
    "UploadKey",
    "accept_upload",
    "accepted_fields",
    "check_key",
    "clean_filename",
    "parse_format",
    "parse_quality",
    "parse_side",
    "upload_options",
    "validate_webhook_url",
]
