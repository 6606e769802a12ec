"""The `imgbatch` command line through the real service: outcomes and their exit codes,
server-down and validation-error output, downloads, the request lifecycle, --help, no
traceback unless --debug, a live bar on a terminal and log lines elsewhere.

Each call runs `python -m imgbatch` in a subprocess, as a user's shell would.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.filesize import decimal

from conftest import encode, photo
from support.imageserver import ImageServer
from support.service import Service, free_port, http, products_csv

COMMANDS = ("submit", "status", "requests", "download", "cancel", "retry", "delete")


@dataclass
class Run:
    code: int
    out: str
    err: str


def imgbatch(
    *args: str,
    server: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Run:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IMGBATCH_")}
    if server:
        environment["IMGBATCH_SERVER"] = server
    environment.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "imgbatch", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr + proc.stdout or "--debug" in args
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    root = tmp_path_factory.mktemp("cli-images")
    for i in range(3):
        (root / f"p{i}.jpg").write_bytes(encode(photo(640, 480, seed=i), "JPEG", quality=92))
    # Not an imgbatch server: a status "document" that lacks every field, and one not JSON.
    (root / "api" / "status").mkdir(parents=True)
    (root / "api" / "status" / "empty").write_text("{}")
    (root / "api" / "status" / "html").write_text("<html>hello</html>")
    with ImageServer(root) as server:
        yield server


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with Service(tmp_path_factory.mktemp("cli-service")) as service:
        service.start(workers=1, concurrency=2)
        yield service


def csv_file(tmp_path: Path, rows: list[tuple[str, list[str]]], name: str = "products.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(products_csv(rows))
    return path


def request_id_of(run: Run) -> str:
    match = re.match(r"^([0-9a-f]{32})$", run.out.splitlines()[0])
    assert match, run
    return match.group(1)


# --- outcomes and exit codes ------------------------------------------------------------------


def test_submit_wait_completed_exits_0_with_summary_and_output_csv(
    svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    path = csv_file(tmp_path, [("Shirt", [images.url("p0.jpg"), images.url("p1.jpg")])])
    run = imgbatch("submit", str(path), "--wait", "--quality", "60", server=svc.url, cwd=tmp_path)
    assert run.code == 0, run
    request_id = request_id_of(run)
    savings = svc.status(request_id)["savings"]
    assert run.out.splitlines()[1:] == [
        "status: completed",
        "images: 2 done, 0 failed",
        f"bytes: {decimal(savings['bytes_in'])} → {decimal(savings['bytes_out'])}, "
        f"{savings['saved_percent']:.1f} % saved",
    ]
    saved = tmp_path / f"imgbatch-{request_id}.csv"
    assert saved.read_bytes() == http("GET", f"{svc.url}/api/requests/{request_id}/output.csv")[2]
    # Off a terminal, progress is a line now and then on stderr, never a bar.
    assert f"{request_id}: completed, images: 2 done, 0 failed" in run.err
    assert "━" not in run.err
    assert f"output CSV: {saved.name}" in run.err

    status = imgbatch("status", request_id, server=svc.url)
    assert status.code == 0 and status.out.startswith("status: completed\nimages: 2 done, 0 failed")


def test_completed_with_errors_exits_2_and_lists_each_failed_image(
    svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    rows = [
        ("Mug", [images.url("p2.jpg")]),
        ("Ghost", [images.url("p0.jpg"), images.url("gone.jpg")]),
        ("Teapot", [images.url("status/500")]),
    ]
    out = tmp_path / "out.csv"
    run = imgbatch("submit", str(csv_file(tmp_path, rows)), "--output", str(out), server=svc.url)
    assert run.code == 2, run
    lines = run.out.splitlines()
    assert lines[1:3] == ["status: completed_with_errors", "images: 2 done, 2 failed"]
    assert lines[3].startswith("bytes: ") and lines[3].endswith(" % saved")
    assert re.fullmatch(
        rf"failed: S. No. 2 {re.escape(images.url('gone.jpg'))} not_found: .+", lines[4]
    )
    assert re.fullmatch(
        rf"failed: S. No. 3 {re.escape(images.url('status/500'))} upstream: .+", lines[5]
    )
    assert len(lines) == 6
    assert out.exists()  # --output implies --wait
    request_id = request_id_of(run)
    assert imgbatch("status", request_id, server=svc.url).code == 2


def test_failed_exits_3(svc: Service, images: ImageServer, tmp_path: Path) -> None:
    path = csv_file(tmp_path, [("Ghost", [images.url("nope-1.jpg"), images.url("nope-2.jpg")])])
    run = imgbatch("submit", str(path), "--wait", server=svc.url, cwd=tmp_path)
    assert run.code == 3, run
    assert run.out.splitlines()[1:4] == [
        "status: failed",
        "images: 0 done, 2 failed",
        "bytes: nothing compressed",
    ]
    assert imgbatch("status", request_id_of(run), server=svc.url).code == 3


def test_submit_without_wait_prints_the_id_and_how_to_follow(
    svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    run = imgbatch(
        "submit", str(csv_file(tmp_path, [("Mug", [images.url("p1.jpg")])])), server=svc.url
    )
    assert run.code == 0
    request_id = request_id_of(run)
    assert run.out == request_id + "\n"
    assert f"imgbatch status {request_id} --wait" in run.err
    assert f"{svc.url}/requests/{request_id}" in run.err
    # The same upload with the same Idempotency-Key answers with the first request.
    path = csv_file(tmp_path, [("Mug", [images.url("p2.jpg")])], "again.csv")
    first = imgbatch("submit", str(path), "--idempotency-key", "nightly-7", server=svc.url)
    again = imgbatch("submit", str(path), "--idempotency-key", "nightly-7", server=svc.url)
    assert first.code == again.code == 0 and first.out == again.out
    follow = imgbatch("status", request_id, "--wait", server=svc.url)
    assert follow.code == 0 and follow.out.startswith("status: completed\nimages: 1 done")


# --- errors: server down, validation, usage, unexpected ---------------------------------------


def test_an_unreachable_server_is_one_line_naming_the_url(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    path = csv_file(tmp_path, [("Mug", ["http://127.0.0.1:9/a.jpg"])])
    for args in (("submit", str(path), "--wait"), ("status", "abc"), ("requests",)):
        run = imgbatch(*args, "--server", down)
        assert run.code == 1 and run.out == ""
        assert run.err.splitlines() == [
            f"imgbatch: cannot reach the imgbatch server at {down} (connection refused); "
            "is it running? Set --server or IMGBATCH_SERVER."
        ], args
    # The variable works as well as the option.
    assert down in imgbatch("status", "abc", server=down).err


def test_validation_errors_come_as_a_table(svc: Service, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "S. No.,Product Name,Input Image Urls\nx,,ftp://a.example/1.jpg\n2,Mug,https://a.example/2.jpg\n"
    )
    run = imgbatch("submit", str(bad), "--wait", server=svc.url)
    assert run.code == 1 and run.out == ""
    lines = run.err.splitlines()
    assert lines[0].startswith("imgbatch: ") and lines[0].endswith("(validation_failed, HTTP 422)")
    assert re.search(r"Row\s+┃\s+Column\s+┃\s+Message", lines[1])
    rows = [re.split(r"\s+│\s+", line.strip()) for line in lines[3:]]
    assert [r[:2] for r in rows] == [
        ["2", "S. No."],
        ["2", "Product Name"],
        ["2", "Input Image Urls"],
    ]
    # A bad option value is the server's to judge, and reads the same way.
    good = csv_file(tmp_path, [("Mug", ["https://a.example/2.jpg"])])
    run = imgbatch("submit", str(good), "--format", "bmp", server=svc.url)
    assert run.code == 1 and "(bad_field, HTTP 400)" in run.err and "format" in run.err
    run = imgbatch("status", "0" * 32, server=svc.url)
    assert run.code == 1 and run.err == "imgbatch: no such request (not_found, HTTP 404)\n"


def test_usage_errors_exit_1(tmp_path: Path) -> None:
    path = csv_file(tmp_path, [("Mug", ["http://127.0.0.1:9/a.jpg"])])
    for args in (
        ("submit", str(path), "--max-width", "0"),
        ("submit", str(tmp_path / "missing.csv")),
        ("status",),
        ("no-such-command",),
        ("status", "abc", "--server", "ftp://127.0.0.1"),
    ):
        run = imgbatch(*args)
        assert run.code == 1, (args, run)
        assert run.err.strip(), args


def test_unexpected_answers_never_show_a_traceback_unless_debug(images: ImageServer) -> None:
    run = imgbatch("status", "html", server=images.base_url)
    assert run.code == 1
    assert "is not JSON: is this an imgbatch server?" in run.err
    run = imgbatch("status", "empty", server=images.base_url)
    assert run.code == 1
    assert run.err.splitlines() == [
        "imgbatch: unexpected error: KeyError: 'status' (run with --debug for details)"
    ]
    debug = imgbatch("--debug", "status", "empty", server=images.base_url)
    assert debug.code == 1 and "Traceback" in debug.err and "KeyError" in debug.err


# --- help and version -----------------------------------------------------------------------------


def test_version_and_every_commands_help() -> None:
    from imgbatch import __version__

    run = imgbatch("--version")
    assert run.code == 0 and run.out == f"imgbatch {__version__}\n"
    top = imgbatch("--help")
    assert top.code == 0 and all(name in top.out for name in COMMANDS)
    assert "Exit codes: 0 completed, 2 completed with errors, 3 failed or cancelled" in top.out
    for name in COMMANDS:
        run = imgbatch(name, "--help", env={"COLUMNS": "200"})
        assert run.code == 0, name
        assert re.search(rf"Example: imgbatch {name} ", run.out), name
        assert "[default: http://127.0.0.1:8000]" in run.out, name
        assert "IMGBATCH_SERVER" in run.out and "IMGBATCH_API_KEY" in run.out, name


# --- a terminal gets a live bar -------------------------------------------------------------------


def test_wait_on_a_terminal_draws_a_live_bar(
    svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    rows = [
        (f"Slow {n}", [images.url(f"slow?seconds=0.5&file=p{n % 3}.jpg&n={n}")]) for n in range(6)
    ]
    path = csv_file(tmp_path, rows)
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGBATCH_")}
    env.update({"IMGBATCH_SERVER": svc.url, "TERM": "xterm-256color", "COLUMNS": "120"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgbatch", "submit", str(path), "--wait"],
        stdout=subprocess.PIPE,
        stderr=terminal,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
    )
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process is done
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    assert proc.wait(30) == 0
    text = screen.decode("utf-8", "replace")
    assert "━" in text and "6/6" in text  # rich's bar, redrawn until every image is done
    assert "\x1b[" in text  # drawn in place with terminal control sequences
    assert "images: 6 done, 0 failed" in stdout


# --- lifecycle: requests, download, cancel, retry, delete ------------------------------------------------------------


def test_download_saves_each_file_the_api_serves(
    svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    rows = [
        ("Shirt", [images.url("p0.jpg"), images.url("p1.jpg")]),
        ("Gone", [images.url("x.jpg")]),
    ]
    submitted = imgbatch(
        "submit", str(csv_file(tmp_path, rows)), "--wait", server=svc.url, cwd=tmp_path
    )
    request_id = request_id_of(submitted)
    out = tmp_path / "dl"
    out.mkdir()
    run = imgbatch(
        "download", request_id, "--csv", "o.csv", "--images-csv", "i.csv", server=svc.url, cwd=out
    )
    assert run.code == 0, run
    base = f"{svc.url}/api/requests/{request_id}"
    for name, path in (("o.csv", "output.csv"), ("i.csv", "images.csv")):
        assert (out / name).read_bytes() == http("GET", f"{base}/{path}")[2], name
    assert len(list(csv.reader(io.StringIO((out / "i.csv").read_text())))) == 4
    assert "output CSV: o.csv" in run.err and "images.csv: i.csv" in run.err
    # Nothing asked: the output CSV under its default name.
    assert imgbatch("download", request_id, server=svc.url, cwd=out).code == 0
    assert (out / f"imgbatch-{request_id}.csv").exists()
    # A failed download leaves no file behind.
    missing = imgbatch("download", "0" * 32, "--csv", "never.csv", server=svc.url, cwd=out)
    assert missing.code == 1 and not (out / "never.csv").exists()
    assert not list(out.glob(".*part*"))
    # A file this machine cannot write is named as such, not blamed on the server.
    nowhere = imgbatch(
        "download", request_id, "--csv", "no/such/dir/o.csv", server=svc.url, cwd=out
    )
    assert nowhere.code == 1
    assert "cannot write no/such/dir/o.csv" in nowhere.err
    assert "cannot reach" not in nowhere.err and "Traceback" not in nowhere.err


def test_cancel_then_retry(svc: Service, images: ImageServer, tmp_path: Path) -> None:
    slow = [
        (f"Slow {n}", [images.url(f"slow?seconds=2&file=p{n % 3}.jpg&n={n}")]) for n in range(12)
    ]
    request_id = request_id_of(imgbatch("submit", str(csv_file(tmp_path, slow)), server=svc.url))
    run = imgbatch("cancel", request_id, server=svc.url)
    assert run.code == 0 and run.out.split(",")[0] in ("processing", "cancelled"), run
    doc = svc.wait_final(request_id)
    assert doc["status"] == "cancelled"
    status = imgbatch("status", request_id, server=svc.url)
    assert status.code == 3 and "status: cancelled" in status.out
    again = imgbatch("cancel", request_id, server=svc.url)
    assert again.code == 1 and "(already_finished, HTTP 409)" in again.err

    retried = imgbatch("retry", request_id, "--wait", server=svc.url)
    assert retried.code == 0, retried
    assert "images: 12 done, 0 failed" in retried.out
    nothing = imgbatch("retry", request_id, server=svc.url)
    assert nothing.code == 1 and "(nothing_to_retry, HTTP 409)" in nothing.err


def test_delete_refuses_a_running_request_then_removes_a_finished_one(
    svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    # 10 images of 3 s on 2 worker slots: running for 15 s, however slow a CLI start is.
    slow = [(f"Slow {n}", [images.url(f"slow?seconds=3&file=p0.jpg&d={n}")]) for n in range(10)]
    request_id = request_id_of(imgbatch("submit", str(csv_file(tmp_path, slow)), server=svc.url))
    running = imgbatch("delete", request_id, server=svc.url)
    assert running.code == 1 and "(not_finished, HTTP 409)" in running.err
    assert imgbatch("cancel", request_id, server=svc.url).code == 0
    svc.wait_final(request_id)
    # On a terminal it asks first, and "no" keeps the request.
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGBATCH_")}
    env["IMGBATCH_SERVER"] = svc.url
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgbatch", "delete", request_id],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    prompt = b""
    deadline = time.monotonic() + 30
    while b"[y/N]" not in prompt and time.monotonic() < deadline:
        if select.select([controller], [], [], 0.5)[0]:
            prompt += os.read(controller, 1024)
    assert b"Delete request" in prompt
    os.write(controller, b"n\n")
    assert proc.wait(30) == 1
    os.close(controller)
    assert svc.status(request_id)["status"] == "cancelled"
    # --yes (or no terminal) deletes; afterwards the request is gone everywhere.
    run = imgbatch("delete", request_id, "--yes", server=svc.url)
    assert run.code == 0 and run.out == f"deleted {request_id}\n"
    gone = imgbatch("status", request_id, server=svc.url)
    assert gone.code == 1 and gone.err == "imgbatch: no such request (not_found, HTTP 404)\n"
    again = imgbatch("delete", request_id, "--yes", server=svc.url)
    assert again.code == 1 and "(not_found, HTTP 404)" in again.err


def test_requests_lists_newest_first_with_a_status_filter(
    svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    good_csv = csv_file(tmp_path, [("A", [images.url("p0.jpg")])], "good.csv")
    bad_csv = csv_file(tmp_path, [("B", [images.url("no.jpg")])], "bad.csv")
    good = request_id_of(imgbatch("submit", str(good_csv), "--wait", server=svc.url, cwd=tmp_path))
    bad = request_id_of(imgbatch("submit", str(bad_csv), "--wait", server=svc.url, cwd=tmp_path))
    run = imgbatch("requests", "--limit", "2", server=svc.url)
    assert run.code == 0, run
    listed = [line.split()[0] for line in run.out.splitlines()[2:]]
    assert listed == [bad, good]
    assert "bad.csv" in run.out and "good.csv" in run.out
    first = imgbatch("requests", "--limit", "1", server=svc.url)
    assert "more: imgbatch requests --cursor" in first.err
    cursor = first.err.split("--cursor ")[1].split()[0]
    older = imgbatch("requests", "--limit", "1", "--cursor", cursor, server=svc.url)
    assert older.code == 0 and good in older.out and bad not in older.out
    only_failed = imgbatch("requests", "--status", "failed", server=svc.url)
    assert bad in only_failed.out and good not in only_failed.out
    wrong = imgbatch("requests", "--status", "nope", server=svc.url)
    assert wrong.code == 1 and "HTTP 400" in wrong.err


def test_zip_from_submit_and_download(svc: Service, images: ImageServer, tmp_path: Path) -> None:
    rows = [
        ("Shirt", [images.url("p0.jpg"), images.url("p1.jpg")]),
        ("Gone", [images.url("x.jpg")]),
    ]
    run = imgbatch(
        "submit", str(csv_file(tmp_path, rows)), "--zip", "all.zip", server=svc.url, cwd=tmp_path
    )
    assert run.code == 2, run  # --zip implies --wait; one image failed
    request_id = request_id_of(run)
    expected = http("GET", f"{svc.url}/api/requests/{request_id}/images.zip")[2]
    assert (tmp_path / "all.zip").read_bytes() == expected
    with zipfile.ZipFile(tmp_path / "all.zip") as archive:
        names = archive.namelist()
    assert "output.csv" in names and len(names) == 3
    again = imgbatch("download", request_id, "--zip", "again.zip", server=svc.url, cwd=tmp_path)
    assert again.code == 0 and (tmp_path / "again.zip").read_bytes() == expected


# --- API keys -------------------------------------------------------------------------------------


def test_api_key_from_the_variable_or_the_option(
    tmp_path_factory: pytest.TempPathFactory, images: ImageServer, tmp_path: Path
) -> None:
    env = {"IMGBATCH_API_KEYS": "key-one"}
    with Service(tmp_path_factory.mktemp("cli-keys"), env=env) as keyed:
        keyed.start(workers=1, concurrency=1)
        path = csv_file(tmp_path, [("Mug", [images.url("p0.jpg")])])
        refused = imgbatch("submit", str(path), server=keyed.url)
        assert refused.code == 1 and "(unauthorized, HTTP 401)" in refused.err
        wrong = imgbatch("submit", str(path), "--api-key", "nope", server=keyed.url)
        assert wrong.code == 1 and "invalid API key" in wrong.err
        run = imgbatch(
            "submit",
            str(path),
            "--wait",
            server=keyed.url,
            env={"IMGBATCH_API_KEY": "key-one"},
            cwd=tmp_path,
        )
        assert run.code == 0, run
        request_id = request_id_of(run)
        assert imgbatch("status", request_id, "--api-key", "key-one", server=keyed.url).code == 0
        assert json.loads(http("GET", keyed.url + "/readyz")[2])["auth"] == "api_keys"
