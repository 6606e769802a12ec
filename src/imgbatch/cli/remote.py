"""The client side of the `imgbatch` command: submit, status, requests, download, cancel,
retry, delete — each a call to a running service's public API (`--server`, `--api-key`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from .app import app
from .client import DEFAULT_SERVER, ApiFailure, Client, LocalFileError, Unreachable
from .follow import wait_final
from .report import (
    FINAL,
    err,
    exit_code,
    failure_lines,
    images_line,
    out,
    print_failure,
    print_requests,
    print_summary,
    progress_line,
    savings_line,
    size,
)

MAX_FAILED_LINES = 50

Server = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="IMGBATCH_SERVER",
        help="Base URL of the imgbatch service.",
        show_envvar=True,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="IMGBATCH_API_KEY",
        help="API key (sent as Authorization: Bearer), when the service requires one.",
        show_envvar=True,
        show_default=False,
    ),
]
RequestId = Annotated[str, typer.Argument(help="The request id (from submit or requests).")]

P = ParamSpec("P")
R = TypeVar("R")


def speaks_to_server(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the client's two errors into one message and exit 1 (no traceback)."""

    @wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except Unreachable as exc:
            err.print(
                f"imgbatch: cannot reach the imgbatch server at {exc.server} ({exc.reason}); "
                "is it running? Set --server or IMGBATCH_SERVER."
            )
        except ApiFailure as failure:
            print_failure(failure)
        except LocalFileError as exc:
            err.print(f"imgbatch: {exc}")
        except ValueError as exc:  # a bad --server URL
            err.print(f"imgbatch: {exc}")
        raise typer.Exit(1)

    return run


def _client(server: str, api_key: str | None) -> Client:
    return Client(server, api_key)


def _outcome(client: Client, doc: dict[str, Any]) -> None:
    """The summary, with the failed images read from images.csv as it streams in."""
    failed = int(doc["progress"].get("failed", 0))
    lines: list[str] = []
    if failed:
        rows = client.csv_rows(f"/api/requests/{doc['request_id']}/images.csv")
        lines = list(failure_lines(rows, MAX_FAILED_LINES))
    print_summary(doc, lines, failed - len(lines))


def _save(client: Client, path: str, target: Path, what: str) -> None:
    written = client.download(path, target)
    err.print(f"{what}: {target} ({size(written)})")


@app.command(epilog="Example: imgbatch submit products.csv --wait --quality auto --max-width 2000")
@speaks_to_server
def submit(
    csv_file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="The product CSV."),
    ],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Follow the request to the end, print its outcome, save the output CSV."
        ),
    ] = False,
    quality: Annotated[
        str | None,
        typer.Option(
            help="1-100, or auto (the lowest that still looks like the original).",
            show_default="server default",
        ),
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format", help="keep, jpeg, webp, png or avif.", show_default="server default: keep"
        ),
    ] = None,
    max_width: Annotated[
        int | None,
        typer.Option(
            min=1, max=16384, help="Scale down to fit this width (px).", show_default="none"
        ),
    ] = None,
    max_height: Annotated[
        int | None,
        typer.Option(
            min=1, max=16384, help="Scale down to fit this height (px).", show_default="none"
        ),
    ] = None,
    webhook_url: Annotated[
        str | None,
        typer.Option(help="Receives a signed request.completed event.", show_default="none"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Where to save the output CSV (implies --wait).",
            show_default="imgbatch-ID.csv with --wait",
        ),
    ] = None,
    zip_file: Annotated[
        Path | None,
        typer.Option(
            "--zip",
            help="Also save a ZIP of the compressed images (implies --wait).",
            show_default="none",
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="Send the same key again (same file, same options, within 24 h) and the "
            "service answers with the first upload's request instead of a new one.",
            show_default="none",
        ),
    ] = None,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """Upload a product CSV; print the request id, and with --wait follow it to the end.

    Exit codes with --wait: 0 completed, 2 completed with errors, 3 failed or cancelled.
    """
    if (
        quality is not None
        and quality != "auto"
        and not (quality.isdigit() and 1 <= int(quality) <= 100)
    ):
        raise typer.BadParameter("an integer from 1 to 100, or auto", param_hint="--quality")
    client = _client(server, api_key)
    fields = {
        name: str(value)
        for name, value in (
            ("quality", quality),
            ("format", format),
            ("max_width", max_width),
            ("max_height", max_height),
            ("webhook_url", webhook_url),
        )
        if value is not None
    }
    accepted = client.upload(csv_file, fields, idempotency_key)
    request_id = accepted["request_id"]
    out.print(request_id)
    err.print(
        f"accepted: {accepted['products']} products, {accepted['images']} images · "
        f"{client.server}/requests/{request_id}"
    )
    if not (wait or output or zip_file):
        err.print(f"follow it with: imgbatch status {request_id} --wait")
        return
    doc = _follow(client, request_id)
    _save(
        client,
        f"/api/requests/{request_id}/output.csv",
        output or Path(f"imgbatch-{request_id}.csv"),
        "output CSV",
    )
    if zip_file is not None:
        if doc["savings"]["images"] if doc.get("savings") else doc["progress"]["succeeded"]:
            _save(client, f"/api/requests/{request_id}/images.zip", zip_file, "images ZIP")
        else:
            err.print("images ZIP: not saved, no image was compressed")
    raise typer.Exit(exit_code(doc["status"]))


def _follow(client: Client, request_id: str) -> dict[str, Any]:
    try:
        doc = wait_final(client, request_id)
    except KeyboardInterrupt:
        err.print(f"stopped waiting; the request goes on: imgbatch status {request_id} --wait")
        raise typer.Exit(130) from None
    _outcome(client, doc)
    return doc


@app.command(epilog="Example: imgbatch status 5f0c9d0e4b2a4c3e9f1a2b3c4d5e6f70 --wait")
@speaks_to_server
def status(
    request_id: RequestId,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it until it is final.")] = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """Show a request's status, savings and failed images.

    Exit codes: 0 completed (or still running), 2 completed with errors, 3 failed or cancelled.
    """
    client = _client(server, api_key)
    if wait:
        doc = _follow(client, request_id)
    else:
        doc = client.call("GET", f"/api/status/{request_id}?limit=1")
        if doc["status"] in FINAL:
            _outcome(client, doc)
        else:
            out.print(f"status: {doc['status']}")
            out.print(images_line(doc))
            out.print(savings_line(doc.get("savings")))
    raise typer.Exit(exit_code(doc["status"]))


@app.command(epilog="Example: imgbatch requests --status completed_with_errors --limit 10")
@speaks_to_server
def requests(
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="Only requests in this status: pending, processing, completed, "
            "completed_with_errors, failed, cancelled.",
            show_default="all",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many to list.")] = 20,
    cursor: Annotated[
        str | None,
        typer.Option(help="Continue from a previous listing's cursor.", show_default="newest"),
    ] = None,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """List requests, newest first."""
    from urllib.parse import urlencode

    query = {
        "limit": str(limit),
        **({"status": status} if status else {}),
        **({"cursor": cursor} if cursor else {}),
    }
    print_requests(_client(server, api_key).call("GET", f"/api/requests?{urlencode(query)}"))


@app.command(
    epilog="Example: imgbatch download 5f0c9d0e4b2a4c3e9f1a2b3c4d5e6f70 --csv out.csv --zip images.zip"
)
@speaks_to_server
def download(
    request_id: RequestId,
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Save the output CSV here.",
            show_default="imgbatch-ID.csv if nothing else is asked",
        ),
    ] = None,
    images_csv: Annotated[
        Path | None,
        typer.Option(
            "--images-csv", help="Save images.csv (one row per image) here.", show_default="none"
        ),
    ] = None,
    zip_file: Annotated[
        Path | None,
        typer.Option(
            "--zip", help="Save a ZIP of the compressed images here.", show_default="none"
        ),
    ] = None,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """Download a request's output CSV, images.csv and/or ZIP of images."""
    client = _client(server, api_key)
    base = f"/api/requests/{request_id}"
    if csv is None and images_csv is None and zip_file is None:
        csv = Path(f"imgbatch-{request_id}.csv")
    for target, path, what in (
        (csv, f"{base}/output.csv", "output CSV"),
        (images_csv, f"{base}/images.csv", "images.csv"),
        (zip_file, f"{base}/images.zip", "images ZIP"),
    ):
        if target is not None:
            _save(client, path, target, what)


@app.command(epilog="Example: imgbatch cancel 5f0c9d0e4b2a4c3e9f1a2b3c4d5e6f70")
@speaks_to_server
def cancel(request_id: RequestId, server: Server = DEFAULT_SERVER, api_key: ApiKey = None) -> None:
    """Cancel a running request: images not started are not processed, the rest finish."""
    doc = _client(server, api_key).post_json(f"/api/requests/{request_id}/cancel")
    out.print(progress_line(doc))


@app.command(
    epilog="Example: imgbatch retry 5f0c9d0e4b2a4c3e9f1a2b3c4d5e6f70 --code upstream --wait"
)
@speaks_to_server
def retry(
    request_id: RequestId,
    code: Annotated[
        list[str] | None,
        typer.Option(
            "--code",
            help="Retry only images failed with this reason code (repeatable).",
            show_default="every failed image",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it until it is final again.")
    ] = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """Retry the failed (and cancelled) images of a finished request."""
    client = _client(server, api_key)
    doc = client.post_json(f"/api/requests/{request_id}/retry", {"codes": code} if code else None)
    out.print(progress_line(doc))
    if wait:
        raise typer.Exit(exit_code(_follow(client, request_id)["status"]))


@app.command(epilog="Example: imgbatch delete 5f0c9d0e4b2a4c3e9f1a2b3c4d5e6f70 --yes")
@speaks_to_server
def delete(
    request_id: RequestId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """Delete a finished request, its stored images and its rows (asks first on a terminal)."""
    client = _client(server, api_key)
    if (
        not yes
        and sys.stdin.isatty()
        and err.is_terminal
        and not typer.confirm(f"Delete request {request_id} and its images?", err=True)
    ):
        raise typer.Exit(1)
    client.call("DELETE", f"/api/requests/{request_id}")
    out.print(f"deleted {request_id}")
