"""A backend that cannot be reached answers `503 unavailable` with Retry-After, never 500
(issue 11, defect 7): /api/upload and /api/status while the database is down."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from imgbatch.api import create_app
from imgbatch.config import Settings
from support.service import free_port

CSV = b"S. No.,Product Name,Input Image Urls\n1,Shoe,https://img.example/a.jpg\n"


def test_a_database_outage_is_503_with_retry_after(tmp_path: Path) -> None:
    # Nothing listens on this port: every connection is refused, as during a crash.
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/imgbatch"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        database_url=down,
        upload_rate_limit=0,
    )
    app = create_app(settings)

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://imgbatch") as client:
            upload = await client.post(
                "/api/upload", content=CSV, headers={"Content-Type": "text/csv"}
            )
            status = await client.get("/api/status/" + "a" * 32)
            ready = await client.get("/readyz")
        return [upload, status, ready]

    upload, status, ready = asyncio.run(scenario())
    for answer in (upload, status):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
        assert json.loads(answer.text)["error"]["code"] == "unavailable"
        assert "postgres" not in answer.text  # no connection details leak
    assert ready.status_code == 503
    documented = app.openapi()["paths"]
    for path, method in (("/api/upload", "post"), ("/api/status/{request_id}", "get")):
        assert "503" in documented[path][method]["responses"]
