"""A small HTTP client for `imgbatch submit` (stdlib only, with a rich progress bar)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn


def _call(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _multipart(csv_file: Path, fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{csv_file.name}"\r\n'
        "Content-Type: text/csv\r\n\r\n".encode()
    )
    parts.append(csv_file.read_bytes())
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def submit_csv(
    csv_file: Path,
    server: str,
    *,
    wait: bool,
    output: Path | None,
    api_key: str | None,
    quality: int | None,
    fmt: str | None,
) -> None:
    server = server.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    fields = {k: str(v) for k, v in (("quality", quality), ("format", fmt)) if v is not None}
    body, content_type = _multipart(csv_file, fields)
    status, raw = _call(
        "POST", f"{server}/api/upload", body, {**headers, "Content-Type": content_type}
    )
    answer: dict[str, Any] = json.loads(raw or b"{}")
    if status != 202:
        typer.echo(json.dumps(answer, indent=2), err=True)
        raise typer.Exit(1)
    request_id = answer["request_id"]
    typer.echo(request_id)
    if not wait:
        return
    doc: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}")
    ) as bar:
        task = bar.add_task(request_id[:8], total=answer["images"])
        while True:
            status, raw = _call("GET", f"{server}/api/status/{request_id}?limit=1", None, headers)
            doc = json.loads(raw)
            progress = doc["progress"]
            bar.update(task, completed=progress["succeeded"] + progress["failed"])
            if doc["status"] in ("completed", "completed_with_errors", "failed"):
                break
            time.sleep(0.5)
    status, raw = _call("GET", f"{server}/api/requests/{request_id}/output.csv", None, headers)
    target = output or Path(f"imgbatch-{request_id}.csv")
    target.write_bytes(raw)
    typer.echo(f"{doc['status']}: {target}")
