"""Routes that manage requests after their upload: history, cancel, retry, delete and the
ZIP of the results.

Each route checks ownership first (another key's request is a 404), then lets the
service decide by a conditional update in the ledger, and answers with the request's
status document. Work that does not fit in the answer's time budget (cancelling the
pending images of a very large request) runs after the answer is sent.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from imgbatch import jobs
from imgbatch.api.ratelimit import limit_uploads
from imgbatch.api.responses import (
    RETRY_BODY,
    STATUS_DOCUMENT_202,
    HistoryPage,
    RequestStatus,
    RetryBody,
    error_responses,
)
from imgbatch.api.routes import Owner, context_of
from imgbatch.context import Context
from imgbatch.errors import ApiError
from imgbatch.ledger import CURSOR_PATTERN
from imgbatch.ledger import statuses as st
from imgbatch.reports import get_request, history_document, iter_images_zip, status_document

router = APIRouter()
log = logging.getLogger(__name__)

MAX_RETRY_BODY = 16 * 1024


def _document(ctx: Context, request_id: str, owner: str | None) -> dict[str, Any]:
    return status_document(ctx, get_request(ctx, request_id, owner))


@router.get(
    "/api/requests",
    tags=["requests"],
    response_model=HistoryPage,
    responses=error_responses(400, 401, 503),
)
async def history(
    request: Request,
    owner: Owner,
    status: Annotated[
        RequestStatus | None, Query(description="Only requests in this status.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Requests per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            pattern=CURSOR_PATTERN,
            description="`next_cursor` of the previous page: where the next page starts.",
        ),
    ] = None,
) -> dict[str, Any]:
    """The caller's requests, newest first, a page at a time (cursor pagination: requests
    created between two pages never shift the next page). With API keys, a key lists only
    its own requests."""
    ctx = context_of(request)
    return await run_in_threadpool(
        history_document, ctx, owner, status=status, limit=limit, cursor=cursor
    )


@router.post(
    "/api/requests/{request_id}/cancel",
    status_code=202,
    tags=["requests"],
    responses={202: STATUS_DOCUMENT_202, **error_responses(401, 404, 409, 503)},
)
async def cancel(request: Request, request_id: str, owner: Owner) -> JSONResponse:
    """Cancel a request: images not started yet become `cancelled`, images in flight finish
    and count, and the request ends `cancelled` (its webhook is sent with that status).

    409 `already_finished` when the request is final or was cancelled already.
    """
    ctx = context_of(request)
    await run_in_threadpool(get_request, ctx, request_id, owner)
    finished = await run_in_threadpool(jobs.cancel, ctx, request_id)
    document = await run_in_threadpool(_document, ctx, request_id, owner)
    rest = None if finished else BackgroundTask(jobs.finish_cancel, ctx, request_id)
    return JSONResponse(document, status_code=202, background=rest)


@router.delete(
    "/api/requests/{request_id}",
    status_code=204,
    tags=["requests"],
    response_class=Response,
    responses={204: {"description": "Deleted."}, **error_responses(401, 404, 409, 503)},
)
async def delete(request: Request, request_id: str, owner: Owner) -> Response:
    """Delete a finished request: its stored images first, then its rows (products, images,
    webhook deliveries). Afterwards every route for it, and its `/files/` links, answer 404.

    409 `not_finished` while it runs: cancel it first. A deletion that stopped half-way (a
    crash) can be asked for again.
    """
    ctx = context_of(request)
    await run_in_threadpool(get_request, ctx, request_id, owner, deleting=True)
    gone = await run_in_threadpool(jobs.delete, ctx, request_id)
    rest = None if gone else BackgroundTask(jobs.purge_quietly, ctx, request_id)
    return Response(status_code=204, background=rest)


@router.get(
    "/api/requests/{request_id}/images.zip",
    tags=["requests"],
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The ZIP, streamed: one stored (not deflated) entry per done "
            "image, `<serial>/<position>-<product name>.<ext>` (positions from 1), and "
            "`output.csv` at the root.",
        },
        **error_responses(401, 404, 409, 503),
    },
)
async def images_zip(request: Request, request_id: str, owner: Owner) -> StreamingResponse:
    """Every done image of a finished request and its output CSV, as one ZIP; 409
    `not_finished` until the request is finished."""
    ctx = context_of(request)
    req = await run_in_threadpool(get_request, ctx, request_id, owner)
    if req.status not in st.FINAL:
        raise ApiError(
            409, "not_finished", f"the request is {req.status}; try again when it is done"
        )
    return StreamingResponse(
        iter_images_zip(ctx, req),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="imgbatch-{request_id}.zip"'},
    )


# Retry makes the workers fetch images again, so it shares the upload rate limit.
@router.post(
    "/api/requests/{request_id}/retry",
    status_code=202,
    tags=["requests"],
    dependencies=[Depends(limit_uploads)],
    responses={202: STATUS_DOCUMENT_202, **error_responses(400, 401, 404, 409, 413, 429, 503)},
    openapi_extra=RETRY_BODY,
)
async def retry(request: Request, request_id: str, owner: Owner) -> JSONResponse:
    """Retry the failed images of a finished request (and the cancelled ones of a cancelled
    request); optional body `{"codes": ["upstream", "timeout"]}` retries only failures with
    those reason codes. The request runs again and its next end sends a new webhook event.

    409 `not_finished` while the request runs, `nothing_to_retry` when no image matches.
    """
    ctx = context_of(request)
    await run_in_threadpool(get_request, ctx, request_id, owner)
    codes = _retry_codes(await _read_small_body(request))
    await run_in_threadpool(jobs.retry, ctx, request_id, codes)
    document = await run_in_threadpool(_document, ctx, request_id, owner)
    return JSONResponse(document, status_code=202)


async def _read_small_body(request: Request) -> bytes:
    """The body, refused with 413 once past `MAX_RETRY_BODY` (counted while it streams)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_RETRY_BODY:
            raise ApiError(413, "too_large", f"the body is larger than {MAX_RETRY_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_codes(raw: bytes) -> list[str] | None:
    """The optional body's reason codes (None: every failed image)."""
    if not raw.strip():
        return None
    try:
        body = RetryBody.model_validate(json.loads(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        details = []
        if isinstance(exc, ValidationError):
            details = [
                {
                    "row": None,
                    "column": ".".join(str(p) for p in err["loc"]),
                    "message": err["msg"],
                }
                for err in exc.errors()
            ]
        raise ApiError(
            400, "bad_request", 'the body must be JSON like {"codes": ["upstream"]}', details
        ) from None
    return body.codes
