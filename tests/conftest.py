"""Shared fixtures: real photographs, a real image server, a running imgbatch service."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserType, Playwright, sync_playwright

from support.backends import scaleout_env
from support.browser import CHROMIUM
from support.imageserver import ImageServer
from support.s3server import SCRUBBED_AWS_VARS, S3Server, start_s3_server
from support.service import Service


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photograph-like image: smooth gradients plus texture, so compression behaves as on photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            128 + 100 * np.sin(x / (17 + seed) + y / 29),
            128 + 100 * np.cos(y / (23 + seed) - x / 41),
            128 + 80 * np.sin((x + y) / (31 + seed)),
        ],
        axis=-1,
    )
    noise = rng.normal(0, 18, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype("uint8"), "RGB")


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few real image files: JPEGs, a PNG with alpha, a WebP, plus a file that is not an image."""
    root = tmp_path_factory.mktemp("images")
    for i in range(6):
        (root / f"photo{i}.jpg").write_bytes(encode(photo(640, 480, seed=i), "JPEG", quality=92))
    rgba = photo(320, 240, seed=9).convert("RGBA")
    rgba.putalpha(180)
    (root / "alpha.png").write_bytes(encode(rgba, "PNG"))
    (root / "photo.webp").write_bytes(encode(photo(400, 300, seed=11), "WEBP", quality=90))
    (root / "not-an-image.jpg").write_bytes(b"<html><body>surprise</body></html>")
    return root


@pytest.fixture(scope="session")
def image_server(image_dir: Path) -> Iterator[ImageServer]:
    with ImageServer(image_dir) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the session; tests create a fresh bucket each."""
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["embedded", pytest.param("scaleout", marks=pytest.mark.scaleout)])
def service(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Service]:
    """imgbatch as an API process plus one worker process, in either shape:

    - embedded: SQLite ledger, SQLite queue, local files (the defaults);
    - scaleout: a fresh PostgreSQL database, a Redis queue, a fresh bucket on moto S3.
    """
    with contextlib.ExitStack() as stack:
        env = None
        if request.param == "scaleout":
            for name in SCRUBBED_AWS_VARS:  # never real AWS credentials or config
                monkeypatch.delenv(name, raising=False)
            env = stack.enter_context(scaleout_env(request.getfixturevalue("s3_server")))
        svc = Service(tmp_path / "data", env=env)
        stack.callback(svc.stop)  # before the database is dropped
        svc.start(workers=1, concurrency=2)
        yield svc


# pytest-playwright keeps one Playwright (and its browser) for the whole session, and while it
# lives the sync API leaves an asyncio event loop set as running in the main thread: any later
# test module calling asyncio.run() would fail. Here they live for one module instead (each
# browser test module launches Chromium once); the plugin's page and context fixtures build
# on these.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser_type(playwright: Playwright, browser_name: str | None) -> BrowserType:
    return getattr(playwright, browser_name or "chromium")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def launch_browser(
    browser_type_launch_args: dict[str, Any], browser_type: BrowserType
) -> Callable[..., Browser]:
    def launch(**kwargs: Any) -> Browser:
        return browser_type.launch(**{**browser_type_launch_args, **kwargs})

    return launch


@pytest.fixture(scope="module")
def browser_context_args() -> dict[str, Any]:
    return {}  # the plugin's reads devices off the session's Playwright; no test uses one


@pytest.fixture(scope="module")
def browser(launch_browser: Callable[..., Browser]) -> Iterator[Browser]:
    launched = launch_browser()
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, object]) -> dict[str, object]:
    """pytest-playwright launches Debian's Chromium, never a browser build of its own."""
    assert CHROMIUM.exists(), "no /usr/bin/chromium: run `make browser` (apt-get install chromium)"
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM)}
