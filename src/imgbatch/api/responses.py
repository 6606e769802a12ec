"""OpenAPI declarations: the error body, each route's documented error statuses, the upload body.

Only documentation: the answers themselves are built by `api.errors`. Keeping
the document honest lets clients generate code from it and lets the fuzz test
(tests/test_api_fuzz.py) hold the service to it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from imgbatch.imaging import MAX_SIDE
from imgbatch.intake import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_PATTERN,
    OUTPUT_FORMATS,
    REPLAYED_HEADER,
    UPLOAD_FIELDS,
)


class ErrorDetail(BaseModel):
    row: int | None = None
    column: str | None = None
    field: str | None = None
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `too_large`.")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of the API."""

    error: ErrorInfo


REASON_CODE = r"^[a-z_]{1,32}$"


class RetryBody(BaseModel):
    """The optional body of `POST /api/requests/{id}/retry`."""

    model_config = ConfigDict(extra="forbid")

    codes: list[Annotated[str, StringConstraints(pattern=REASON_CODE)]] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description="Retry only failed images with these reason codes (default: every "
        "failed image). Cancelled images of a cancelled request are always retried.",
        examples=[["upstream", "timeout"]],
    )


STATUS_DOCUMENT_202: dict[str, Any] = {
    "description": "Accepted: the request's status document, as `GET /api/status/{request_id}` "
    "answers it.",
    "content": {"application/json": {"schema": {"type": "object"}}},
}

RETRY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": RetryBody.model_json_schema()}},
    }
}


RequestStatus = Literal[
    "pending", "processing", "completed", "completed_with_errors", "failed", "cancelled"
]


class Progress(BaseModel):
    total: int
    succeeded: int
    failed: int
    pending: int = Field(description="Images not finished yet (pending or processing).")
    cancelled: int
    percent: float = Field(description="Images that reached an end, in percent (one decimal).")


class Savings(BaseModel):
    """Over the request's done images."""

    images: int
    bytes_in: int
    bytes_out: int
    saved_bytes: int
    saved_percent: float = Field(description="100 x saved / in, one decimal; 0 while none.")


class HistoryItem(BaseModel):
    request_id: str
    status: RequestStatus
    created_at: str
    completed_at: str | None
    filename: str | None = Field(description="The uploaded file's name (multipart), else null.")
    products: int
    images: int
    progress: Progress
    savings: Savings


class HistoryPage(BaseModel):
    """The caller's requests, newest first."""

    requests: list[HistoryItem]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page."
    )


class UploadAccepted(BaseModel):
    request_id: str
    status: str
    status_url: str
    products: int
    images: int
    # Without API keys, with a webhook_url: the secret that signs this upload's events,
    # shown here only (with keys, the key's secret at /api/webhook-secret signs them).
    webhook_secret: str | None = None


class WebhookSecretOut(BaseModel):
    """The key's webhook signing secret (`whsec_…`, Standard Webhooks)."""

    secret: str
    created_at: str
    rotated_at: str | None
    previous_valid_until: str | None


_MEANINGS = {
    400: "Malformed request: bad parameters, multipart body or CSV syntax.",
    401: "Missing or invalid API key (only when API keys are configured).",
    404: "No such resource, or it belongs to another API key.",
    408: "The upload body did not arrive in full in time, or arrived too slowly.",
    409: "The request is not in a state that allows this (yet): see the error code.",
    413: "The upload or the CSV exceeds a size or row limit.",
    415: "Not a CSV: unsupported content type, binary data or an archive.",
    422: "The CSV or a field is well-formed but invalid (every problem listed), or an "
    "Idempotency-Key was used for a different upload.",
    429: "Too many uploads; retry after the number of seconds in Retry-After.",
    431: "Request headers are too many or too large.",
    503: "A backend (database, queue, storage) is unreachable; retry after Retry-After seconds.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the error body (and 429's Retry-After)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in (*statuses, 431):
        entry: dict[str, Any] = {"model": ErrorBody, "description": _MEANINGS[status]}
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[status] = entry
    return out


_UNSET = {"type": "string", "maxLength": 0}  # an empty value means "not given" (HTML forms)
_FORM_FIELDS: dict[str, Any] = {
    "webhook_url": {
        "anyOf": [
            {"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2048},
            _UNSET,
        ],
        "description": "http(s) URL that receives a signed `request.completed` event.",
    },
    "quality": {
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 100},
            {"type": "string", "enum": ["auto"]},
            _UNSET,
        ],
        "description": "JPEG/WebP/AVIF quality, or `auto`: the lowest quality whose output "
        "still meets the perceptual target (IMGBATCH_AUTO_QUALITY_TARGET); the default when "
        "empty or absent.",
    },
    "format": {"type": "string", "enum": [*OUTPUT_FORMATS, "jpg", ""]},
    "max_width": {
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_SIDE}, _UNSET],
        "description": "Scale down (never up) to fit inside this width, aspect kept, after "
        "EXIF orientation.",
    },
    "max_height": {
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_SIDE}, _UNSET],
        "description": "Scale down (never up) to fit inside this height.",
    },
}
# Other names an option may arrive under (intake.UPLOAD_FIELDS), documented as such.
_ALIASES: dict[str, Any] = {
    alias: {**_FORM_FIELDS[option], "description": f"Alias of `{option}`."}
    for option, aliases in UPLOAD_FIELDS.items()
    for alias in aliases
}
_DOCUMENTED = {**_FORM_FIELDS, **_ALIASES}

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The product CSV (UTF-8): S. No., Product Name, "
                            "Input Image Urls. Any one file part is taken, whatever its name; "
                            "other names are refused with 400 unknown_field.",
                        },
                        **_DOCUMENTED,
                    },
                }
            },
            "text/csv": {"schema": {"type": "string", "description": "The CSV as the raw body."}},
        },
    },
    "parameters": [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": "Also accepted as a multipart form field; the same option with two "
            "different values is refused (400 conflicting_fields).",
            "schema": schema,
        }
        for name, schema in _DOCUMENTED.items()
    ]
    + [
        {
            "name": IDEMPOTENCY_HEADER,
            "in": "header",
            "required": False,
            "description": "Makes a retried upload safe: the same key (from the same API key, "
            "or the same client when the API is open) with the same upload within 24 hours "
            "answers the first upload's 202 again (with `Idempotent-Replayed: true`) and "
            "creates nothing; with a different upload, 422 idempotency_key_reused.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": IDEMPOTENCY_KEY_PATTERN,
            },
        }
    ],
}

UPLOAD_202: dict[str, Any] = {
    "description": "Accepted (or, for a repeated Idempotency-Key, the first upload's answer).",
    "headers": {
        REPLAYED_HEADER: {
            "description": "`true` when this is the stored answer to an earlier upload with "
            "the same Idempotency-Key.",
            "schema": {"type": "string", "enum": ["true"]},
        }
    },
}
