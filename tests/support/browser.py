"""Helpers for the dashboard's browser tests: Debian's Chromium, console watching, artifacts.

The browser is `/usr/bin/chromium` (installed by `make browser` / scripts/browser.sh),
launched by Playwright through `executable_path`; Playwright's own browser download is never
used. Every page is watched for console errors and uncaught exceptions; a test names the
few failed requests it provokes on purpose (a 401, a 422), and anything else fails it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
_FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")


@dataclass
class ConsoleWatch:
    """Console errors and page errors of one page; `expect` allows a provoked HTTP failure."""

    errors: list[str] = field(default_factory=list)
    allowed: list[tuple[int, str]] = field(default_factory=list)

    def attach(self, page: Any) -> ConsoleWatch:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        return self

    def _console(self, message: Any) -> None:
        if message.type not in ("error", "warning"):
            return
        url = (message.location or {}).get("url", "")
        self.errors.append(f"{message.type}: {message.text} [{url}]")

    def expect(self, status: int, path: str) -> None:
        """A failed load with this status of a URL containing `path` is part of the test."""
        self.allowed.append((status, path))

    def unexpected(self) -> list[str]:
        out = []
        for line in self.errors:
            failed = _FAILED_LOAD.match(line.split(": ", 1)[1]) if ": " in line else None
            if failed and any(
                int(failed.group(1)) == status and path in line for status, path in self.allowed
            ):
                continue
            out.append(line)
        return out


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artifact (artifacts/ is not committed)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
