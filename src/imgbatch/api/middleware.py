"""HTTP middleware: security headers on every response, header limits, trailing slashes, CORS.

`install_middleware(app, settings)` is called once by the app factory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgbatch.api.errors import error_body
from imgbatch.config import Settings

# Past uvicorn's own cap on the raw request head (`cli.MAX_REQUEST_HEAD`), a
# request's header fields are also limited in number and total size here.
MAX_HEADER_FIELDS = 100
MAX_HEADER_BYTES = 32 * 1024

# JSON, CSV and errors: nothing may load or run, nothing may frame it.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
# Stored images opened directly: a browser's image viewer needs the image and its own styles.
MEDIA_CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
)
# Any other HTML: the dashboard's pages send their own, equally strict, policy (web.policy).
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# FastAPI's /docs (Swagger UI) and /redoc load their bundles, fonts and favicon from CDNs.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    """Pure ASGI middleware (streaming responses pass through untouched).

    Adds nosniff, X-Frame-Options, Referrer-Policy and a Content-Security-Policy
    chosen by the response's content type (HTML pages and the API docs get a
    looser one than everything else), and `Cache-Control: no-store` unless the
    route set its own caching. Requests with too many or too large header
    fields are answered 431 before they reach a route.
    """

    def __init__(self, app: ASGIApp, docs_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = (scope.get("path", "").rstrip("/") or "/") in self.docs_paths  # see TrailingSlashes
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = _with_security_headers(list(message.get("headers", [])), docs)
            await send(message)

        headers = scope.get("headers", [])
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if len(headers) > MAX_HEADER_FIELDS or size > MAX_HEADER_BYTES:
            message = (
                f"request headers are too large (at most {MAX_HEADER_FIELDS} fields "
                f"and {MAX_HEADER_BYTES} bytes)"
            )
            await _send_json(send_with_headers, 431, error_body("headers_too_large", message))
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Starlette's outermost ServerErrorMiddleware would answer without our
            # headers; answer here and re-raise so the error is still logged.
            if not started:
                body = error_body("internal", "internal server error")
                await _send_json(send_with_headers, 500, body)
            raise


def _with_security_headers(
    headers: list[tuple[bytes, bytes]], docs: bool
) -> list[tuple[bytes, bytes]]:
    present = {name.lower() for name, _ in headers}
    content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"").lower()
    if docs and content_type.startswith(b"text/html"):
        csp = DOCS_CSP
    elif content_type.startswith(b"text/html"):
        csp = PAGE_CSP
    elif content_type.startswith((b"image/", b"video/", b"audio/")):
        csp = MEDIA_CSP
    else:
        csp = API_CSP
    extra = [(name, value) for name, value in _ALWAYS if name not in present]
    if b"content-security-policy" not in present:
        extra.append((b"content-security-policy", csp.encode("ascii")))
    if b"cache-control" not in present:
        extra.append((b"cache-control", b"no-store"))
    return headers + extra


async def _send_json(send: Send, status: int, body: object) -> None:
    data = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode("ascii")),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class TrailingSlashes:
    """Serve `/api/upload/` as `/api/upload`, directly: no `307` for plain curl to print nothing.

    Starlette would redirect, and a client without `-L` (or one that will not
    resend a POST body) sees an empty answer. Every path but `/` loses its
    trailing slashes before routing; no route of ours ends in one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = dict(scope)
            scope["path"] = path.rstrip("/") or "/"
            raw = scope.get("raw_path")
            if raw:
                scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


def install_middleware(app: FastAPI, settings: Settings) -> None:
    """CORS only when `IMGBATCH_CORS_ORIGINS` is set; security headers always (outermost)."""
    app.add_middleware(TrailingSlashes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "HEAD", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Retry-After", "Content-Disposition", "Idempotent-Replayed"],
            allow_credentials=False,  # API keys travel in headers, not cookies
            max_age=600,
        )
    docs_paths = [p for p in (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p]
    app.add_middleware(SecurityHeaders, docs_paths=docs_paths)
