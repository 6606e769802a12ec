"""Worker processes under faults (issue 11): children die with their parent (defect 2), a
queue outage is logged once and backed off (defect 6)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huey import RedisHuey

from imgbatch.queue import ConsumerHooks
from imgbatch.queue.consumer import build_consumer
from support.service import free_port


def children(pid: int) -> set[int]:
    """Direct children of `pid` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found.update(int(c) for c in text.split())
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def start(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "IMGBATCH_DATA_DIR": str(tmp_path / "data"),
        "IMGBATCH_LOG_LEVEL": "WARNING",
        "IMGBATCH_PORT": str(free_port()),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = open(tmp_path / "out.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "imgbatch", *args], env=env, stdout=log, stderr=log
    )


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_kill_9_of_the_main_process_leaves_no_process_behind(tmp_path: Path, command: str) -> None:
    args = ["worker", "--concurrency", "2"] if command == "worker" else ["serve", "--workers", "2"]
    main = start(tmp_path, *args)
    try:
        # worker: 2 job processes + Huey's scheduler; serve: the worker process, and its own.
        def tree() -> set[int]:
            below = children(main.pid)
            return below | {g for c in below for g in children(c)}

        assert wait_for(lambda: len(tree()) >= 3, 60), (tmp_path / "out.log").read_text()
        time.sleep(1.0)  # past start-up: the children run their loops
        descendants = tree()
        main.send_signal(signal.SIGKILL)
        main.wait(10)
        assert wait_for(lambda: not any(alive(p) for p in descendants), 5), [
            (p, Path(f"/proc/{p}/cmdline").read_bytes()) for p in descendants if alive(p)
        ]
    finally:
        if main.poll() is None:
            main.kill()
            main.wait()


def test_a_queue_outage_is_logged_once_and_backed_off(caplog: pytest.LogCaptureFixture) -> None:
    huey = RedisHuey("outage", url=f"redis://127.0.0.1:{free_port()}/0", blocking=True)
    faults: list[int] = []
    consumer = build_consumer(
        huey,
        1,
        "thread",
        None,
        ConsumerHooks(on_queue_fault=lambda: faults.append(1)),
        initial_delay=0.05,
        backoff=1.5,
        max_delay=0.1,
        scheduler_interval=60,
        periodic=False,
    )
    worker, _thread = consumer.worker_threads[0]
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        while time.monotonic() - started < 3.0:
            worker.loop()  # nothing listens: every dequeue fails
    lines = [r for r in caplog.records if r.name.startswith(("huey", "imgbatch"))]
    assert len(faults) <= 6, "the outage was not backed off"  # 0.1 + 0.2 + 0.4 + 0.8 + 1.6
    assert len(faults) >= 3
    assert [r.getMessage().split(":")[0] for r in lines] == ["queue unavailable"]
    assert lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    huey.storage.conn.connection_pool.disconnect()
