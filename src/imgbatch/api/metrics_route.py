"""`GET /metrics`: Prometheus text format, for the whole node plus the ledger."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from imgbatch import metrics

router = APIRouter()


@router.get("/metrics", tags=["health"], response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    """Counters of this node's processes and gauges read from the ledger and the queue."""
    body = await run_in_threadpool(metrics.render, request.app.state.ctx)
    return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)
