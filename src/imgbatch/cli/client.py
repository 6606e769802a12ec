"""The HTTP client of the command line (stdlib only): one place that turns every way a call
can go wrong into one of two errors the commands can print in a line or a table.

- `Unreachable`: no answer at all (refused, DNS, timeout, TLS) — names the server URL;
- `ApiFailure`: an answer that is not 2xx — carries the API's code, message and details.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from imgbatch import __version__

DEFAULT_SERVER = "http://127.0.0.1:8000"
TIMEOUT = 60.0
CHUNK = 256 * 1024


class Unreachable(Exception):
    """The server did not answer (connection refused, unknown host, timeout)."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(f"cannot reach the imgbatch server at {server} ({reason})")
        self.server = server
        self.reason = reason


class LocalFileError(Exception):
    """A file on this machine could not be written: the user's to fix, not the server's."""

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(f"cannot write {path}: {exc.strerror or exc}")
        self.path = path


@dataclass
class ApiFailure(Exception):
    """A non-2xx answer, as the API described it."""

    status: int
    code: str
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


def check_server_url(server: str) -> str:
    """The base URL without a trailing slash; ValueError when it is not an http(s) URL."""
    parts = urlsplit(server.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the server URL must start with http:// or https://, not {server!r}")
    return server.strip().rstrip("/")


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "no answer in time"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error: {reason.reason or reason}"
    text = str(getattr(reason, "strerror", None) or reason).strip()
    return text.splitlines()[0] if text else type(reason).__name__


def _failure(status: int, raw: bytes) -> ApiFailure:
    try:
        error = json.loads(raw)["error"]
        return ApiFailure(
            status, str(error["code"]), str(error["message"]), list(error.get("details") or [])
        )
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip().splitlines()
        return ApiFailure(status, f"http_{status}", text[0][:200] if text else "no message")


class Client:
    """Calls to one imgbatch server, with the API key when there is one."""

    def __init__(self, server: str, api_key: str | None = None, timeout: float = TIMEOUT) -> None:
        self.server = check_server_url(server)
        self.timeout = timeout
        self.headers = {"User-Agent": f"imgbatch-cli/{__version__}"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def _open(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        request = urllib.request.Request(
            self.server + path,
            data=body,
            method=method,
            headers={**self.headers, **(headers or {})},
        )
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            with err:
                raise _failure(err.code, err.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            raise Unreachable(self.server, _reason(exc)) from None

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The JSON answer (None for an empty one); ApiFailure or Unreachable otherwise."""
        try:
            with self._open(method, path, body, headers) as response:
                raw = response.read()
        except (TimeoutError, OSError) as exc:  # while reading the body
            raise Unreachable(self.server, _reason(exc)) from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiFailure(
                200,
                "not_json",
                f"the answer of {self.server}{path.split('?')[0]} is not JSON: "
                "is this an imgbatch server?",
            ) from None

    def post_json(self, path: str, document: Any | None = None) -> Any:
        body = None if document is None else json.dumps(document).encode()
        return self.call("POST", path, body, {"Content-Type": "application/json"})

    def upload(
        self, csv_file: Path, fields: Mapping[str, str], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        body, content_type = multipart(csv_file.name, csv_file.read_bytes(), fields)
        headers = {"Content-Type": content_type}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        answer: dict[str, Any] = self.call("POST", "/api/upload", body, headers)
        return answer

    def csv_rows(self, path: str) -> Iterator[dict[str, str]]:
        """The rows of a CSV answer, read as they stream in (stop early: the rest is never read)."""
        with self._open("GET", path) as response:
            try:
                text = io.TextIOWrapper(response, encoding="utf-8", newline="")
                yield from csv.DictReader(text)
            except (TimeoutError, OSError) as exc:
                raise Unreachable(self.server, _reason(exc)) from None

    def download(self, path: str, target: Path) -> int:
        """Stream an answer into `target` (via a temporary file, so a failure leaves nothing).

        A file this machine cannot write (no such directory, no permission, a full disk) is
        `LocalFileError`, never mistaken for a server that cannot be reached.
        """
        partial = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
        size = 0
        try:
            out = partial.open("wb")
        except OSError as exc:
            raise LocalFileError(target, exc) from None
        try:
            with out, self._open("GET", path) as response:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (TimeoutError, OSError) as exc:  # while reading the body
                        raise Unreachable(self.server, _reason(exc)) from None
                    if not chunk:
                        break
                    _write(out, chunk, target)
                    size += len(chunk)
            try:
                os.replace(partial, target)
            except OSError as exc:
                raise LocalFileError(target, exc) from None
        finally:
            partial.unlink(missing_ok=True)
        return size


def _write(out: BinaryIO, chunk: bytes, target: Path) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise LocalFileError(target, exc) from None


def multipart(filename: str, data: bytes, fields: Mapping[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body: the small fields, then the CSV in the field `file`."""
    boundary = uuid.uuid4().hex
    safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
        "Content-Type: text/csv\r\n\r\n".encode()
    )
    parts += [data, f"\r\n--{boundary}--\r\n".encode()]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
