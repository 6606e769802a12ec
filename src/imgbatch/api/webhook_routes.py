"""Webhook routes: what was sent for a request, a manual redelivery, and the key's secret."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from imgbatch.api.ratelimit import limit_uploads
from imgbatch.api.responses import WebhookSecretOut, error_responses
from imgbatch.api.routes import Owner, context_of
from imgbatch.errors import ApiError
from imgbatch.reports import get_request
from imgbatch.webhooks import key_secret, list_deliveries, redeliver, rotate_key_secret

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


def _key_owner(owner: str | None) -> str:
    if owner is None:
        raise ApiError(
            409,
            "no_api_keys",
            "this service runs without API keys: each upload with a webhook_url gets its own "
            "signing secret, once, in its 202 answer",
        )
    return owner


_SECRET_DOCS: dict[str, Any] = {
    "tags": ["webhooks"],
    "response_model": WebhookSecretOut,
    "responses": error_responses(401, 409, 503),
}


@router.get("/api/webhook-secret", **_SECRET_DOCS)
async def webhook_secret(request: Request, owner: Owner) -> dict[str, object]:
    """The secret that signs events sent to the webhook URLs your uploads name (made on
    first use). Verify them with it (Standard Webhooks); the operator's own receiver uses
    another secret."""
    secret = await run_in_threadpool(key_secret, context_of(request).db, _key_owner(owner))
    return secret.as_dict()


@router.post("/api/webhook-secret/rotate", dependencies=[Depends(limit_uploads)], **_SECRET_DOCS)
async def rotate_webhook_secret(request: Request, owner: Owner) -> dict[str, object]:
    """A new signing secret. For 24 hours events carry a signature with the old one too,
    so a receiver can switch without missing any."""
    ctx = context_of(request)
    secret = await run_in_threadpool(rotate_key_secret, ctx.db, _key_owner(owner))
    return secret.as_dict()
