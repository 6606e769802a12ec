"""The `imgbatch` command itself: the typer app, its global options and the entry point.

`main()` is the one place where errors meet the user: usage errors and server errors exit 1
with a message, results exit 0/2/3, and no traceback is shown unless `--debug` asks for it.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from imgbatch import __version__
from imgbatch.errors import one_line

app = typer.Typer(
    help="imgbatch: bulk product-image compression. CSV in, compressed images and an output CSV out.",
    no_args_is_help=True,
    add_completion=False,
    epilog="Exit codes: 0 completed, 2 completed with errors, 3 failed or cancelled, "
    "1 usage or server errors. Example: imgbatch submit products.csv --wait",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = {"on": os.environ.get("IMGBATCH_DEBUG", "").lower() in ("1", "true", "yes")}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imgbatch {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", envvar="IMGBATCH_DEBUG", help="Show tracebacks of unexpected errors."
        ),
    ] = False,
) -> None:
    """imgbatch: bulk product-image compression. CSV in, compressed images and an output CSV out.

    Exit codes: 0 completed, 2 completed with errors, 3 failed or cancelled, 1 usage or server
    errors.
    """
    _debug["on"] = _debug["on"] or debug


def main(args: list[str] | None = None) -> None:
    """Entry point of the `imgbatch` script and `python -m imgbatch`."""
    try:
        code = app(args=args, prog_name="imgbatch", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors: exit 1, as documented (click says 2)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"imgbatch: {exc}", err=True)
        code = 1
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("imgbatch: interrupted", err=True)
        code = 130
    except Exception as exc:
        if _debug["on"]:
            raise
        typer.echo(
            f"imgbatch: unexpected error: {one_line(exc)} (run with --debug for details)",
            err=True,
        )
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
