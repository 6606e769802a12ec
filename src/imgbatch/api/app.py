"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from imgbatch import __version__
from imgbatch.api.errors import install_error_handlers
from imgbatch.api.metrics_route import router as metrics_router
from imgbatch.api.middleware import install_middleware
from imgbatch.api.ratelimit import TokenBuckets
from imgbatch.api.request_routes import router as request_router
from imgbatch.api.responses import error_responses
from imgbatch.api.routes import router
from imgbatch.api.security import ApiKeys
from imgbatch.api.webhook_routes import router as webhook_router
from imgbatch.config import Settings, get_settings
from imgbatch.context import Context
from imgbatch.web import router as web_router

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="imgbatch",
        version=__version__,
        description="Bulk product-image compression: CSV in, compressed images and an output CSV out.",
    )
    app.state.settings = settings
    app.state.ctx = Context(settings)
    app.state.upload_slots = asyncio.Semaphore(max(1, settings.max_concurrent_uploads))
    app.state.api_keys = ApiKeys(settings.load_api_keys())
    if not app.state.api_keys.enabled:
        log.warning("no IMGBATCH_API_KEYS configured: the API is open to anyone who can reach it")
    app.state.upload_buckets = TokenBuckets(settings.upload_rate_limit)
    install_error_handlers(app)
    install_middleware(app, settings)
    app.include_router(router)
    app.include_router(request_router)
    app.include_router(webhook_router, responses=error_responses(401, 404, 409, 503))
    app.include_router(web_router)
    app.include_router(metrics_router)
    return app
