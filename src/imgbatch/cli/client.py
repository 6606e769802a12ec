"""A small HTTP client for `imgbatch submit` (stdlib only, with a rich progress bar)."""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
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
    options: dict[str, str | int | None],
) -> None:
    server = server.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    fields = {name: str(value) for name, value in options.items() if value is not None}
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
            if doc["status"] in ("completed", "completed_with_errors", "failed", "cancelled"):
                break
            time.sleep(0.5)
    status, raw = _call("GET", f"{server}/api/requests/{request_id}/output.csv", None, headers)
    target = output or Path(f"imgbatch-{request_id}.csv")
    target.write_bytes(raw)
    typer.echo(f"{doc['status']}: {target}")
    for line in summary(doc["savings"], doc["progress"]["failed"]):
        typer.echo(line)
    if doc["progress"]["failed"]:
        for line in failure_lines(
            _images_csv(f"{server}/api/requests/{request_id}/images.csv", headers)
        ):
            typer.echo(line)


def _images_csv(url: str, headers: dict[str, str]) -> Iterator[dict[str, str]]:
    """The rows of images.csv, read as they stream in."""
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        yield from csv.DictReader(io.TextIOWrapper(resp, encoding="utf-8", newline=""))


def human_bytes(n: int) -> str:
    """1234567 -> "1.2 MB" (decimal units, as file managers show them)."""
    value, unit = float(n), "B"
    for bigger in ("kB", "MB", "GB"):
        if abs(value) < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


def summary(savings: dict[str, Any], failed: int) -> list[str]:
    """What a finished request came to, in two lines."""
    return [
        f"images: {savings['images']} done, {failed} failed",
        f"bytes: {human_bytes(savings['bytes_in'])} → {human_bytes(savings['bytes_out'])}, "
        f"{savings['saved_percent']:.1f} % saved",
    ]


def failure_lines(rows: Iterable[dict[str, str]]) -> Iterator[str]:
    """One line per failed image: serial number, URL, reason code and message."""
    for row in rows:
        if row["Status"] == "failed":
            yield (
                f"failed: S. No. {row['S. No.']} {row['Input Image Url']} "
                f"{row['Error Code']}: {row['Error Message']}"
            )
