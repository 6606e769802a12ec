"""Uploads take turns to parse (IMGBATCH_MAX_CONCURRENT_UPLOADS), never to send their body.

A body is received before its upload takes a slot, so a client that sends slowly holds
its own connection only; at most IMGBATCH_MAX_CONCURRENT_UPLOADS uploads are parsed and
written to the ledger at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imgbatch.api import create_app, routes
from imgbatch.config import Settings
from imgbatch.ledger import upgrade

CSV = b"S. No.,Product Name,Input Image Urls\n1,Shoe,https://img.example/a.jpg\n"
HEADERS = {"Content-Type": "text/csv"}


def _app(tmp_path: Path) -> Any:
    settings = Settings(data_dir=tmp_path, max_concurrent_uploads=1, upload_rate_limit=0)
    upgrade(settings.resolved_database_url)
    return create_app(settings)


def test_a_trickling_body_holds_no_slot(tmp_path: Path) -> None:
    app = _app(tmp_path)

    async def scenario() -> None:
        release = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield CSV[:10]
            await release.wait()  # the body stops halfway, for as long as the client likes
            yield CSV[10:]

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://imgbatch") as client:
            first = asyncio.create_task(
                client.post("/api/upload", content=slow_body(), headers=HEADERS)
            )
            await asyncio.sleep(0.2)
            second = await asyncio.wait_for(
                client.post("/api/upload", content=CSV, headers=HEADERS), 5
            )
            assert second.status_code == 202, second.text
            assert not first.done()
            release.set()
            assert (await first).status_code == 202

    asyncio.run(scenario())


def test_uploads_still_take_turns_to_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(tmp_path)
    parsing = threading.Event()
    release = threading.Event()
    real_accept = routes.accept_upload

    def slow_accept(*args: Any, **kwargs: Any) -> Any:
        if not parsing.is_set():
            parsing.set()
            release.wait(10)  # the first upload is being parsed and written, slowly
        return real_accept(*args, **kwargs)

    monkeypatch.setattr(routes, "accept_upload", slow_accept)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://imgbatch") as client:
            first = asyncio.create_task(client.post("/api/upload", content=CSV, headers=HEADERS))
            await asyncio.to_thread(parsing.wait, 5)
            second = asyncio.create_task(client.post("/api/upload", content=CSV, headers=HEADERS))
            await asyncio.sleep(0.5)
            assert not second.done(), "the second upload was parsed while the only slot was taken"
            release.set()
            answers = await asyncio.gather(first, second)
        assert [a.status_code for a in answers] == [202, 202]

    asyncio.run(scenario())
