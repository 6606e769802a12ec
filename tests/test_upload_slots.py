"""Uploads take turns: at most IMGBATCH_MAX_CONCURRENT_UPLOADS are read and parsed at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from imgbatch.api import create_app
from imgbatch.config import Settings
from imgbatch.ledger import upgrade

CSV = b"S. No.,Product Name,Input Image Urls\n1,Shoe,https://img.example/a.jpg\n"


def test_a_second_upload_waits_for_the_first(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_concurrent_uploads=1, upload_rate_limit=0)
    upgrade(settings.resolved_database_url)
    app = create_app(settings)

    async def scenario() -> None:
        release = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield CSV[:10]
            await release.wait()  # the first upload holds its slot while its body trickles in
            yield CSV[10:]

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://imgbatch") as client:
            headers = {"Content-Type": "text/csv"}
            first = asyncio.create_task(
                client.post("/api/upload", content=slow_body(), headers=headers)
            )
            await asyncio.sleep(0.2)
            second = asyncio.create_task(client.post("/api/upload", content=CSV, headers=headers))
            await asyncio.sleep(0.5)
            assert not second.done(), "the second upload ran while the first held the only slot"
            release.set()
            answers = await asyncio.gather(first, second)
        assert [a.status_code for a in answers] == [202, 202]

    asyncio.run(scenario())
