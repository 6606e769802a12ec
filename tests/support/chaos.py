"""Backends a chaos test owns, so it may crash them: a PostgreSQL cluster and a Redis server.

Never the machine's shared PostgreSQL (5432) or Redis (6379): each is started here with its
own data directory on its own port, crashed and restarted at will, and removed afterwards.

    with OwnPostgres() as pg:   pg.url, pg.crash(), pg.start(), pg.log_text()
    with OwnRedis() as redis:   redis.url, redis.kill(), redis.start(), redis.flush()
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from support.service import free_port


def _pg_tool(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None
    )
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return found


class OwnPostgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:<port> (initdb as `postgres` when root)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="imgbatch-chaos-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/imgbatch"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def __enter__(self) -> OwnPostgres:
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            _pg_tool("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self.start()
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE imgbatch")
        return self

    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200 -c deadlock_timeout=200ms"
        )
        self._run(
            _pg_tool("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "start",
        )

    def crash(self) -> None:
        """`immediate` stop: no shutdown checkpoint, connections cut, as a crash would."""
        self._run(_pg_tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(_pg_tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class OwnRedis:
    """A redis-server of our own on 127.0.0.1:<port>, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        client.flushdb()
        client.close()

    def __enter__(self) -> OwnRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
