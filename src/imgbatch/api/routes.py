"""HTTP routes: upload, status, output CSV, stored files, health."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from imgbatch.api.bodies import BodyLimits, receive_body
from imgbatch.api.ratelimit import caller_scope, limit_uploads
from imgbatch.api.responses import UPLOAD_202, UPLOAD_BODY, UploadAccepted, error_responses
from imgbatch.api.security import require_owner
from imgbatch.catalogue import IMAGES_HEADER, iter_images_csv, iter_output_csv
from imgbatch.context import Context
from imgbatch.errors import ApiError
from imgbatch.intake import (
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    UploadKey,
    accept_upload,
    check_key,
    parse_format,
    parse_quality,
    parse_side,
    upload_options,
    validate_webhook_url,
)
from imgbatch.ledger import statuses as st
from imgbatch.reports import get_request, iter_image_rows, iter_output_rows, status_document
from imgbatch.storage import validate_key

log = logging.getLogger(__name__)
router = APIRouter()

Owner = Annotated[str | None, Depends(require_owner)]
MULTIPART_OVERHEAD = 64 * 1024  # room for boundaries and the small form fields
MAX_FORM_PARTS = 16  # file and text parts each; more is not an upload form
CSV_TYPES = ("text/csv", "application/csv", "text/plain", "application/vnd.ms-excel")


def context_of(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _upload_kind(request: Request) -> str:
    """ "multipart" or "csv" from the content type; 415 before any of the body is read."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return "multipart"
    if content_type in CSV_TYPES:
        return "csv"
    raise ApiError(
        415,
        "unsupported_media_type",
        "send multipart/form-data with the CSV as a file part (e.g. field 'file'), "
        "or a text/csv body",
    )


def _body_limits(ctx: Context, kind: str) -> BodyLimits:
    settings = ctx.settings
    extra = MULTIPART_OVERHEAD if kind == "multipart" else 0
    return BodyLimits(
        cap=settings.max_csv_bytes + extra,
        timeout=settings.upload_timeout,
        min_rate=settings.upload_min_rate,
    )


async def _csv_and_fields(
    request: Request, kind: str, body: bytes, max_csv: int
) -> tuple[bytes, dict[str, str], str | None]:
    """The CSV, the upload's options (every form field and query parameter is accounted
    for) and the uploaded file's name (multipart only)."""
    received = [("query parameter", k, v) for k, v in request.query_params.multi_items()]
    if kind == "csv":
        return body, upload_options(received), None
    request._body = body  # let Starlette's form parser read the received body
    try:
        form = await request.form(
            max_files=MAX_FORM_PARTS,
            max_fields=MAX_FORM_PARTS,
            max_part_size=MULTIPART_OVERHEAD,
        )
    except MultiPartException as exc:  # Starlette's messages are written for clients
        raise ApiError(
            400, "bad_multipart", f"the multipart body could not be parsed: {exc.message}"
        ) from None
    except Exception as exc:  # anything else: its text stays in the log
        log.info("unparseable multipart upload: %s: %s", type(exc).__name__, exc)
        raise ApiError(400, "bad_multipart", "the multipart body could not be parsed") from None
    files = [(name, v) for name, v in form.multi_items() if isinstance(v, UploadFile)]
    texts = [(name, v) for name, v in form.multi_items() if isinstance(v, str)]
    upload = _the_file(files, texts)
    data = await upload.read()
    if len(data) > max_csv:
        raise ApiError(413, "too_large", f"the CSV is larger than {max_csv} bytes")
    received = [*(("form field", k, v) for k, v in texts), *received]
    return data, upload_options(received), upload.filename


def _the_file(files: list[tuple[str, UploadFile]], texts: list[tuple[str, str]]) -> UploadFile:
    """The one file part of the form, whatever its field name."""
    if len(files) > 1:
        names = ", ".join(
            f"{name!r} ({upload.filename or 'no file name'})" for name, upload in files
        )
        raise ApiError(
            400,
            "too_many_files",
            f"send one CSV file per upload; got {len(files)} file parts: {names}",
            [{"field": name, "message": "a file part"} for name, _ in files],
        )
    if files:
        return files[0][1]
    as_text = [name for name, value in texts if "\n" in value]
    hint = (
        f"; field {as_text[0]!r} holds text, not a file: send it as a file "
        f"(curl -F '{as_text[0]}=@products.csv')"
        if as_text
        else " (curl -F 'file=@products.csv')"
    )
    raise ApiError(400, "missing_file", f"send the CSV as a file part of the form{hint}")


@router.post(
    "/api/upload",
    status_code=202,
    tags=["requests"],
    dependencies=[Depends(limit_uploads)],
    response_model=UploadAccepted,
    responses={202: UPLOAD_202, **error_responses(400, 401, 408, 409, 413, 415, 422, 429, 503)},
    openapi_extra=UPLOAD_BODY,
)
async def upload(request: Request, owner: Owner) -> JSONResponse:
    """Upload a product CSV (one file part, any field name, or a text/csv body).

    Options, as form fields or query parameters: webhook_url (or webhookUrl,
    callback_url), quality (1-100 or auto), format, max_width and max_height
    (1-16384: scale down to fit inside). Any other name is refused
    (`400 unknown_field`), never ignored.
    """
    ctx = context_of(request)
    key = check_key(request.headers.get(IDEMPOTENCY_HEADER))
    idempotency = UploadKey(caller_scope(request, owner), key) if key is not None else None
    kind = _upload_kind(request)
    # The body arrives first, outside any slot, within a deadline and a minimum rate
    # (`bodies`): a client that sends slowly or stops holds its connection, not a slot.
    spool = await receive_body(request, _body_limits(ctx, kind))
    # Uploads take their turn to parse: each may hold a few copies of a 20 MiB body
    # while it is parsed, so their number (not only their size) bounds memory.
    with spool:
        async with request.app.state.upload_slots:
            body = spool.read()
            spool.close()  # a body on disk: its file goes now
            data, fields, filename = await _csv_and_fields(
                request, kind, body, ctx.settings.max_csv_bytes
            )
            quality = parse_quality(fields.get("quality"), ctx.settings.default_quality)
            output_format = parse_format(fields.get("format"))
            max_width = parse_side(
                "max_width", fields.get("max_width"), ctx.settings.default_max_width
            )
            max_height = parse_side(
                "max_height", fields.get("max_height"), ctx.settings.default_max_height
            )
            webhook_url = await run_in_threadpool(
                validate_webhook_url, ctx, fields.get("webhook_url")
            )
            accepted = await run_in_threadpool(
                accept_upload,
                ctx,
                data,
                quality=quality,
                output_format=output_format,
                webhook_url=webhook_url,
                owner=owner,
                max_width=max_width,
                max_height=max_height,
                filename=filename,
                idempotency=idempotency,
            )
    replayed = {REPLAYED_HEADER: "true"} if accepted.replayed else None
    return JSONResponse(accepted.body, status_code=202, headers=replayed)


@router.get(
    "/api/status/{request_id}", tags=["requests"], responses=error_responses(400, 401, 404, 503)
)
async def status(
    request: Request,
    request_id: str,
    owner: Owner,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,  # past a 64-bit int SQL fails
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> dict[str, Any]:
    """Progress of a request; `products` is paginated with offset/limit, progress never is."""
    ctx = context_of(request)
    req = await run_in_threadpool(get_request, ctx, request_id, owner)
    return await run_in_threadpool(status_document, ctx, req, offset, limit)


@router.get(
    "/api/requests/{request_id}/output.csv",
    tags=["requests"],
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "The CSV."},
        **error_responses(401, 404, 409, 503),
    },
)
async def output_csv(request: Request, request_id: str, owner: Owner) -> StreamingResponse:
    """The input columns plus "Output Image Urls", in input order; 409 until the request is finished."""
    ctx = context_of(request)
    req = await run_in_threadpool(get_request, ctx, request_id, owner)
    if req.status not in st.FINAL:
        raise ApiError(
            409, "not_finished", f"the request is {req.status}; try again when it is done"
        )
    chunks = iter_output_csv(iter_output_rows(ctx, request_id))
    return StreamingResponse(
        (chunk.encode("utf-8") for chunk in chunks),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="imgbatch-{request_id}.csv"'},
    )


@router.get(
    "/api/requests/{request_id}/images.csv",
    tags=["requests"],
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "One row per image: " + ", ".join(IMAGES_HEADER) + ".",
        },
        **error_responses(401, 404),
    },
)
async def images_csv(request: Request, request_id: str, owner: Owner) -> StreamingResponse:
    """One row per image with its outcome (sizes, saved percent, dimensions, format, quality,
    error), in input order; available at any time, it reflects the current state."""
    ctx = context_of(request)
    await run_in_threadpool(get_request, ctx, request_id, owner)
    chunks = iter_images_csv(iter_image_rows(ctx, request_id))
    return StreamingResponse(
        (chunk.encode("utf-8") for chunk in chunks),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="imgbatch-{request_id}-images.csv"'},
    )


_FILE_DOCS: dict[str, Any] = {
    "tags": ["files"],
    "response_class": Response,
    "responses": {
        200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(404, 503),
    },
}


# A route per method (one GET+HEAD route documents one operation id twice); GET is
# registered first so a 405 on this path lists it.
@router.head("/files/{key:path}", include_in_schema=False)
@router.get("/files/{key:path}", **_FILE_DOCS)
async def files(request: Request, key: str) -> Response:
    """Stored images, streamed from the blob store (links are shareable but unguessable)."""
    ctx = context_of(request)
    try:
        key = validate_key(key)
    except ValueError:
        raise ApiError(404, "not_found", "no such file") from None
    try:
        info = await run_in_threadpool(ctx.storage.stat, key)
    except ValueError:  # a symlink that leads out of the storage root
        log.warning("refused /files/%s: it leads out of the storage directory", key)
        raise ApiError(404, "not_found", "no such file") from None
    if info is None:
        raise ApiError(404, "not_found", "no such file")
    headers = {
        "Cache-Control": "public, max-age=31536000, immutable",
        "Content-Length": str(info.size),
        "X-Content-Type-Options": "nosniff",
    }
    if request.method == "HEAD":
        return Response(status_code=200, media_type=info.content_type, headers=headers)
    try:
        chunks = await run_in_threadpool(ctx.storage.iter_chunks, key)
    except (KeyError, ValueError):  # deleted (or replaced by a link) between stat and open
        raise ApiError(404, "not_found", "no such file") from None
    return StreamingResponse(chunks, media_type=info.content_type, headers=headers)


@router.get("/healthz", tags=["health"], responses=error_responses())
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["health"],
    responses={503: {"description": "A backend is unreachable (same body)."}, **error_responses()},
)
async def readyz(request: Request) -> JSONResponse:
    """Database and queue reachable."""
    ctx = context_of(request)
    checks: dict[str, str] = {}
    for name, probe in (("database", ctx.db.ping), ("queue", ctx.queue.check)):
        try:
            await run_in_threadpool(probe)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": checks,
        "auth": "api_keys" if request.app.state.api_keys.enabled else "open",
    }
    return JSONResponse(body, status_code=200 if ready else 503)
