"""A real S3-compatible server (moto) for tests, in its own process on 127.0.0.1.

A subprocess rather than `ThreadedMotoServer`: its state is isolated from the test process's
moto mocks, and it is reachable over HTTP from other processes (scale-out tests run several
worker processes that must all see the same bucket).

    server = start_s3_server()           # or: with running_s3_server() as server:
    server.create_bucket("images")
    env = server.env()                   # dummy credentials + endpoint for the code under test
    ...
    server.stop()

The child binds port 0 itself and reports the port back through a pipe, so there is no
race for a "free" port. It exits when its stdin closes, i.e. also when the test process dies.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "DUMMY_ACCESS_KEY_ID",
    "DUMMY_REGION",
    "DUMMY_SECRET_ACCESS_KEY",
    "S3Server",
    "create_bucket",
    "dummy_s3_env",
    "running_s3_server",
    "s3_client",
    "start_s3_server",
]

DUMMY_ACCESS_KEY_ID = "testing"
DUMMY_SECRET_ACCESS_KEY = "testing"
DUMMY_REGION = "us-east-1"
# Variables that could point the code under test at real AWS credentials or config.
SCRUBBED_AWS_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL_S3",
)


def dummy_s3_env(endpoint_url: str) -> dict[str, str]:
    """Environment for code under test (this process or a worker subprocess) to use the
    moto server with dummy credentials. Also unset `SCRUBBED_AWS_VARS`."""
    return {
        "IMGBATCH_S3_ENDPOINT_URL": endpoint_url,
        "IMGBATCH_S3_REGION": DUMMY_REGION,
        "IMGBATCH_S3_ACCESS_KEY_ID": DUMMY_ACCESS_KEY_ID,
        "IMGBATCH_S3_SECRET_ACCESS_KEY": DUMMY_SECRET_ACCESS_KEY,
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": DUMMY_REGION,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client for test setup/inspection, with dummy credentials."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=DUMMY_REGION,
        aws_access_key_id=DUMMY_ACCESS_KEY_ID,
        aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 2}),
    )


def create_bucket(endpoint_url: str, name: str) -> None:
    """Create bucket `name` on the server at `endpoint_url` (idempotent)."""
    client = s3_client(endpoint_url)
    try:
        client.create_bucket(Bucket=name)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    finally:
        client.close()


class S3Server:
    """A running moto server process. Use `start_s3_server()` to get one."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, log: Path):
        self.process = process
        self.host = host
        self.port = port
        self.log_path = log
        self.endpoint_url = f"http://{host}:{port}"
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3Server({self.endpoint_url!r}, pid={self.process.pid})"

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """See `dummy_s3_env`."""
        return dummy_s3_env(self.endpoint_url)

    def create_bucket(self, name: str) -> None:
        """Create bucket `name` (idempotent)."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def client(self) -> Any:
        """A shared boto3 S3 client (thread-safe) with dummy credentials, for setup/inspection."""
        if self._client is None:
            self._client = s3_client(self.endpoint_url)
        return self._client

    def reset(self) -> None:
        """Drop every bucket and object (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (idempotent)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_s3_server(host: str = "127.0.0.1", *, timeout: float = 30.0) -> S3Server:
    """Start a moto S3 server on `host` and a free port; return once it answers HTTP."""
    log_fd, log_name = tempfile.mkstemp(prefix="moto-s3-", suffix=".log")
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(
            # -I: the script directory (tests/support) must not shadow stdlib or site modules.
            [sys.executable, "-I", os.path.abspath(__file__), "--serve", host, str(write_fd)],
            stdin=subprocess.PIPE,
            stdout=log_fd,
            stderr=log_fd,
            pass_fds=(write_fd,),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        os.close(write_fd)
        os.close(log_fd)
    server: S3Server | None = None
    try:
        port = _read_port(read_fd, process, timeout)
        server = S3Server(process, host, port, Path(log_name))
        atexit.register(server.stop)
        _wait_http(server, deadline=time.monotonic() + timeout)
        return server
    except BaseException:
        if server is None:
            server = S3Server(process, host, 0, Path(log_name))
        log = server.read_log()
        server.stop()
        if isinstance(exc := sys.exc_info()[1], RuntimeError):
            raise RuntimeError(f"{exc}\n--- moto server log ---\n{log[-4000:]}") from exc
        raise
    finally:
        os.close(read_fd)


@contextlib.contextmanager
def running_s3_server(host: str = "127.0.0.1") -> Iterator[S3Server]:
    """`with running_s3_server() as server:` -- started on entry, stopped on exit."""
    server = start_s3_server(host)
    try:
        yield server
    finally:
        server.stop()


def _read_port(fd: int, process: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"moto server did not report its port within {timeout}s")
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:
                raise RuntimeError(f"moto server exited early (code {process.wait(5)})")
            data += chunk
        elif process.poll() is not None:
            raise RuntimeError(f"moto server exited early (code {process.returncode})")
    return int(data)


def _wait_http(server: S3Server, deadline: float) -> None:
    # moto imports its backends lazily; make sure S3 requests are served before returning.
    while True:
        try:
            with urllib.request.urlopen(f"{server.endpoint_url}/moto-api/data.json", timeout=5):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the server is up
        except OSError:
            if not server.is_running() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto server at {server.endpoint_url} is not answering"
                ) from None
            time.sleep(0.05)


def _serve(host: str, port_fd: int) -> None:
    """Child process: serve moto on an OS-assigned port, report it, exit when stdin closes."""
    import logging
    import threading

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no per-request lines
    app = DomainDispatcherApplication(create_backend_app)
    httpd = make_server(host, 0, app, threaded=True, request_handler=MotoRequestHandler)
    os.environ["MOTO_PORT"] = str(httpd.server_port)  # moto builds some URLs from it

    def watch_parent() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    os.write(port_fd, f"{httpd.server_port}\n".encode())
    os.close(port_fd)
    httpd.serve_forever()


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    _serve(sys.argv[2], int(sys.argv[3]))
