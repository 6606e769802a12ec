"""The server side of the `imgbatch` command: serve, worker, migrate."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from typing import Annotated

import typer

from imgbatch.config import Settings
from imgbatch.errors import one_line

from .app import app

# uvicorn's httptools parser has no limit on the request head (10 MB of headers
# were accepted); h11 refuses a head that grows past this while it is incomplete.
MAX_REQUEST_HEAD = 64 * 1024
# A body no route reads is cut off this long after an upload would have been (408).
BODY_BACKSTOP_MARGIN = 10.0


def _settings(**overrides: object) -> Settings:
    settings = Settings()
    updates = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=updates) if updates else settings


def _prepare(settings: Settings) -> None:
    """Logging, data dir, migrations and backend checks; exits with one line on a bad setting."""
    from imgbatch.context import Context
    from imgbatch.ledger import upgrade
    from imgbatch.logs import setup_logging
    from imgbatch.metrics import setup_multiprocess

    from .checks import ConfigError, check_backends

    setup_logging(settings.log_format, settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    setup_multiprocess(settings.data_dir)  # before any metric is touched, before workers fork
    try:
        upgrade(settings.resolved_database_url)
        checked = Context(settings)
        check_backends(checked)
        # Close what the check opened now, in this process: left to the garbage collector,
        # a SQLite connection could be finalized in a forked worker instead, where closing
        # it may delete the WAL file that this process still uses.
        checked.queue.close()
    except ConfigError as exc:
        typer.echo(f"imgbatch: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:
        typer.echo(
            f"imgbatch: configuration error: IMGBATCH_DATABASE_URL: {one_line(exc)}",
            err=True,
        )
        raise typer.Exit(2) from None


def _start_worker_process(settings: Settings, concurrency: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["IMGBATCH_PUBLIC_BASE_URL"] = settings.resolved_public_base_url
    env["IMGBATCH_DATA_DIR"] = str(settings.data_dir)
    parent = os.getpid()
    command = [
        sys.executable,
        "-m",
        "imgbatch",
        "worker",
        "--concurrency",
        str(concurrency),
        "--parent-pid",
        str(parent),
    ]

    def die_with_serve() -> None:
        # Linux: SIGTERM (Huey's immediate stop, which stops the job processes too) when
        # `serve` dies, even by kill -9; the worker also checks that `serve` is still its
        # parent in its loop, for the race before this call and for other systems.
        from imgbatch.queue import die_with_parent

        die_with_parent(signal.SIGTERM, parent)

    return subprocess.Popen(command, env=env, preexec_fn=die_with_serve)


def _stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # Huey: finish running jobs, then exit
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (env PORT or IMGBATCH_PORT).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Image worker processes started beside the API; 0 runs the API alone. Default: one per core, plus one."
        ),
    ] = None,
) -> None:
    """Run the HTTP API, and on the embedded default also the workers and the recovery sweep."""
    import uvicorn

    from imgbatch.api import create_app, protocol_with_deadlines

    settings = _settings(host=host, port=port)
    _prepare(settings)
    if settings.host in ("0.0.0.0", "::") and not settings.public_base_url:
        logging.getLogger("imgbatch").warning(
            "listening on %s without IMGBATCH_PUBLIC_BASE_URL: output URLs will name %s",
            settings.host,
            settings.resolved_public_base_url,
        )
    concurrency = settings.worker_concurrency if workers is None else workers
    worker = _start_worker_process(settings, concurrency) if concurrency > 0 else None
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
            # h11 with deadlines on request heads and bodies (api.protocol)
            http=protocol_with_deadlines(
                settings.request_head_timeout, settings.upload_timeout + BODY_BACKSTOP_MARGIN
            ),
            h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
        )
    finally:
        if worker is not None:
            _stop(worker)


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="Image jobs run at once (processes). Default: one per core, plus one."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve this node's Prometheus counters on IMGBATCH_HOST:PORT/metrics."),
    ] = None,
    parent_pid: Annotated[
        int | None,
        typer.Option(hidden=True, help="Stop when this process (serve) is gone."),
    ] = None,
) -> None:
    """Run image workers, the webhook sender and the recovery sweep (no HTTP API)."""
    from imgbatch.jobs import run_worker

    settings = _settings()
    _prepare(settings)
    run_worker(settings, concurrency, metrics_port=metrics_port, parent_pid=parent_pid)


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic) up to the latest revision."""
    from imgbatch.ledger import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    typer.echo("database is at the latest revision")
