"""The dashboard's routes: the page shells, the before/after view, static files, the favicon.

Every page is the same static shell (no data in it, nothing rendered on the server); its
scripts read the public API with the caller's key. URLs are stable and reload-safe:
`/` (history and upload), `/requests/<id>` (one request, `?page=` for its products),
`/requests/<id>/compare/<product>/<image>` (1-based positions in input order).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from imgbatch.config import Settings
from imgbatch.context import Context
from imgbatch.errors import ApiError
from imgbatch.reports import image_input_url

from .policy import origin_of, page_csp

router = APIRouter(include_in_schema=False)

_HERE = Path(__file__).parent
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Read once: the set of static files is fixed at install time, so a name is either one of
# these or a 404 (no path from the URL ever reaches the filesystem).
_STATIC = {
    path.name: (path.read_bytes(), _TYPES[path.suffix])
    for path in sorted((_HERE / "static").iterdir())
    if path.suffix in _TYPES
}
_SHELL = (_HERE / "pages" / "app.html").read_text(encoding="utf-8")
_COMPARE = (_HERE / "pages" / "compare.html").read_text(encoding="utf-8")
# Browsers revalidate (cheap) instead of running yesterday's script against today's API.
_REVALIDATE = "no-cache"
MAX_POSITION = 1_000_000  # past the CSV limits; a bigger number is a 404, not a query


def _output_origins(settings: Settings) -> list[str | None]:
    """Where thumbnails come from: this service under its public name, or a public bucket."""
    return [
        origin_of(settings.resolved_public_base_url),
        origin_of(settings.public_storage_base_url),
    ]


def _page(request: Request, html: str, extra_origin: str | None = None) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    csp = page_csp([*_output_origins(settings), extra_origin])
    return HTMLResponse(
        html, headers={"Content-Security-Policy": csp, "Cache-Control": _REVALIDATE}
    )


@router.get("/", response_class=HTMLResponse)
async def history_page(request: Request) -> HTMLResponse:
    return _page(request, _SHELL)


@router.get("/requests/{request_id}", response_class=HTMLResponse)
async def request_page(request: Request, request_id: str) -> HTMLResponse:
    return _page(request, _SHELL)


@router.get("/requests/{request_id}/compare/{product}/{image}", response_class=HTMLResponse)
async def compare_page(request: Request, request_id: str, product: int, image: int) -> HTMLResponse:
    """Before/after of one image: this page alone may show the input, from the input's origin.

    The origin comes from the ledger, never from the URL, so a crafted link cannot widen the
    policy; an unknown image gets the plain policy and the page says what is missing.
    """
    input_url = None
    if 1 <= product <= MAX_POSITION and 1 <= image <= MAX_POSITION:
        ctx: Context = request.app.state.ctx
        input_url = await run_in_threadpool(
            image_input_url, ctx, request_id, product - 1, image - 1
        )
    return _page(request, _COMPARE, origin_of(input_url))


@router.get("/static/{name}")
async def static(name: str) -> Response:
    found = _STATIC.get(name)
    if found is None:
        raise ApiError(404, "not_found", "no such file")
    body, content_type = found
    return Response(body, media_type=content_type, headers={"Cache-Control": _REVALIDATE})


@router.get("/favicon.ico")
async def favicon() -> Response:
    """Browsers ask for it whatever the page says; an answer keeps the console clean."""
    body, content_type = _STATIC["favicon.svg"]
    return Response(body, media_type=content_type, headers={"Cache-Control": "max-age=86400"})
