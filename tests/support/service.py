"""Run the real imgbatch service in subprocesses for end-to-end tests.

`Service` starts `imgbatch serve` (API, optionally with its own workers) and
any number of separate `imgbatch worker` processes, each in its own process
group so a test can `kill -9` a worker with all its children, as a crash would.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

FINAL = ("completed", "completed_with_errors", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def multipart(csv_bytes: bytes, **fields: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    out += csv_bytes + f"\r\n--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def products_csv(rows: list[tuple[str, list[str]]]) -> bytes:
    """A valid product CSV: serial numbers 1..n, one (name, urls) pair per row."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    for serial, (name, urls) in enumerate(rows, start=1):
        writer.writerow([serial, name, ",".join(urls)])
    return out.getvalue().encode()


class Service:
    """A running imgbatch deployment: one API process plus separate worker processes."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, api_workers: int = 0
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "IMGBATCH_DATA_DIR": str(data_dir),
            "IMGBATCH_ALLOW_PRIVATE_URLS": "true",
            "IMGBATCH_PUBLIC_BASE_URL": self.url,
            "IMGBATCH_SWEEP_INTERVAL": "1",
            "IMGBATCH_LEASE_SECONDS": "5",
            "IMGBATCH_STALE_PENDING_SECONDS": "10",
            "IMGBATCH_FETCH_BACKOFF_BASE": "0.05",
            "IMGBATCH_WEBHOOK_SCHEDULE": "0.2,0.4,0.8,1.6",
            "IMGBATCH_WEBHOOK_POLL_INTERVAL": "0.2",
            "IMGBATCH_LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self.api_workers = api_workers
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.log_dir = data_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # --- processes ---------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [sys.executable, "-m", "imgbatch", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, workers: int = 1, concurrency: int = 2) -> Service:
        self.api = self._spawn(
            "api", ["serve", "--port", str(self.port), "--workers", str(self.api_workers)]
        )
        self.wait_ready()
        for _ in range(workers):
            self.start_worker(concurrency)
        return self

    def start_worker(self, concurrency: int = 2) -> subprocess.Popen[bytes]:
        proc = self._spawn(
            f"worker-{len(self.workers)}", ["worker", "--concurrency", str(concurrency)]
        )
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """kill -9 the worker and every process it forked, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.api is not None
            if self.api.poll() is not None:
                raise RuntimeError(f"imgbatch serve exited early:\n{self.logs()}")
            try:
                status, _, _ = http("GET", self.url + "/readyz", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"imgbatch did not become ready:\n{self.logs()}")

    def stop(self) -> None:
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    continue
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- API helpers -------------------------------------------------------
    def upload(
        self, csv_bytes: bytes, headers: dict[str, str] | None = None, **fields: str
    ) -> tuple[int, dict[str, Any]]:
        body, content_type = multipart(csv_bytes, **fields)
        status, _, raw = http(
            "POST",
            self.url + "/api/upload",
            body,
            {"Content-Type": content_type, **(headers or {})},
        )
        return status, json.loads(raw)

    def status(
        self, request_id: str, headers: dict[str, str] | None = None, query: str = ""
    ) -> dict[str, Any]:
        url = f"{self.url}/api/status/{request_id}" + (f"?{query}" if query else "")
        status, _, raw = http("GET", url, headers=headers)
        assert status == 200, raw
        return json.loads(raw)  # type: ignore[no-any-return]

    def wait_final(
        self,
        request_id: str,
        timeout: float = 120,
        headers: dict[str, str] | None = None,
        interval: float = 0.2,
        query: str = "",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            doc = self.status(request_id, headers, query)
            if doc["status"] in FINAL:
                return doc
            time.sleep(interval)
        raise TimeoutError(f"request {request_id} not final: {doc.get('progress')}\n{self.logs()}")
