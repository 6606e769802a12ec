"""Webhook routes: what was sent for a request, and a manual redelivery."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from imgbatch.api.ratelimit import limit_uploads
from imgbatch.api.routes import Owner, context_of
from imgbatch.reports import get_request
from imgbatch.webhooks import list_deliveries, redeliver

router = APIRouter()


@router.get("/api/requests/{request_id}/webhooks", tags=["webhooks"])
async def deliveries(request: Request, request_id: str, owner: Owner) -> dict[str, Any]:
    """The request's webhook deliveries, each with its attempts and last result."""
    ctx = context_of(request)
    await run_in_threadpool(get_request, ctx, request_id, owner)
    items = await run_in_threadpool(list_deliveries, ctx, request_id)
    return {"request_id": request_id, "deliveries": items}


# Redelivery makes us POST to a URL on demand, so it shares the upload rate limit.
@router.post(
    "/api/requests/{request_id}/webhooks/redeliver",
    status_code=202,
    tags=["webhooks"],
    dependencies=[Depends(limit_uploads)],
)
async def redeliver_completion(request: Request, request_id: str, owner: Owner) -> JSONResponse:
    """Queue another attempt of the `request.completed` event (same `webhook-id`).

    409 while the request is not finished, when it has no event (no webhook URL
    applied when it finished), or while an attempt is being sent.
    """
    ctx = context_of(request)
    await run_in_threadpool(get_request, ctx, request_id, owner)
    queued = await run_in_threadpool(redeliver, ctx, request_id)
    return JSONResponse(queued, status_code=202)
