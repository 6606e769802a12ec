"""The embedded default as `make run` starts it: one `imgbatch serve` that runs its own workers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from support.imageserver import ImageServer
from support.service import Service, products_csv


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return stat[0] != "Z"


def test_serve_runs_its_own_workers_and_they_die_with_it(
    tmp_path: Path, image_server: ImageServer
) -> None:
    # Production timings (the defaults), as `make run` has them.
    defaults = {"IMGBATCH_SWEEP_INTERVAL": "15", "IMGBATCH_LEASE_SECONDS": "120"}
    service = Service(tmp_path / "data", env=defaults, api_workers=3)
    try:
        service.start(workers=0)
        assert service.api is not None
        # Two requests in a row: the second one proves the workers' queue connection
        # survived the first (a forked child once deleted the SQLite WAL under its parent).
        for round_ in range(2):
            rows = [(f"P{round_}-{i}", [image_server.url(f"/photo{i}.jpg")]) for i in range(4)]
            status, answer = service.upload(products_csv(rows))
            assert status == 202, answer
            doc = service.wait_final(answer["request_id"], timeout=60)
            assert doc["status"] == "completed", doc["progress"]
        (worker,) = children_of(service.api.pid)
        grandchildren = children_of(worker)
        assert len(grandchildren) >= 3  # the Huey worker processes (plus its scheduler)

        os.kill(service.api.pid, signal.SIGKILL)  # serve crashes: no orphan worker remains
        service.api.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and alive(worker):
            time.sleep(0.1)
        assert not alive(worker), "the worker outlived `imgbatch serve`"
    finally:
        service.stop()
