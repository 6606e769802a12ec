"""Prometheus metrics, safe across the API process and forked worker processes.

Two kinds, each computed where it is correct:

- Work counters and the processing-time histogram are written by the process
  that did the work (a forked image worker, the webhook sender thread) into
  prometheus_client's multiprocess files under `PROMETHEUS_MULTIPROC_DIR`, and
  summed over every process of the node at scrape time.
- Ledger gauges (requests by status, unfinished images, queue depth, backend
  up) are read from the database and the queue at scrape time, so they are
  right across any number of machines.

`setup_multiprocess` must run at process start, before any metric is touched
(`imgbatch serve` and `imgbatch worker` call it).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from imgbatch.context import Context
    from imgbatch.fetching import HostBoard

log = logging.getLogger(__name__)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "backend_fault",
    "image_processed",
    "images_repeated",
    "render",
    "request_finished",
    "setup_multiprocess",
    "start_http_server",
    "webhook_delivery",
]

ENV = "PROMETHEUS_MULTIPROC_DIR"

IMAGES_PROCESSED = Counter(
    "imgbatch_images_processed",
    "Images processed, by outcome (done or failed) and failure reason (none when done).",
    ["outcome", "reason"],
)
PROCESSING_SECONDS = Histogram(
    "imgbatch_image_processing_seconds",
    "Time from claiming an image to recording its result (fetch, compress, store).",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
REQUESTS_FINISHED = Counter(
    "imgbatch_requests_finished",
    "Requests that reached a final status, counted by the process that finalized them.",
    ["status"],
)
WEBHOOK_DELIVERIES = Counter(
    "imgbatch_webhook_deliveries",
    "Webhook delivery attempts by result: delivered, retry, failed (gave up), claim_lost.",
    ["result"],
)

BACKEND_FAULTS = Counter(
    "imgbatch_backend_faults",
    "Faults of a backend met by a worker (storage, database, queue, fetch), each try counted.",
    ["backend"],
)
IMAGES_GIVEN_BACK = Counter(
    "imgbatch_images_given_back",
    "Images released to pending after a backend's fault, to be retried (not failed).",
    ["backend"],
)
# Labelled, as every counter here: a metric without labels creates its value at import,
# before `setup_multiprocess` chose the multiprocess value class, and would count nothing.
IMAGES_REPEATED = Counter(
    "imgbatch_images_repeated_url",
    "Positions that repeat a URL of their request: settled by its one download, not fetched "
    "(by that download's outcome).",
    ["outcome"],
)

# A delivery's status after an attempt → the `result` label.
_WEBHOOK_RESULTS = {"delivered": "delivered", "pending": "retry", "failed": "failed"}


def image_processed(outcome: str, reason: str | None, seconds: float) -> None:
    """Count one processed image and observe its processing time."""
    IMAGES_PROCESSED.labels(outcome, reason or "none").inc()
    PROCESSING_SECONDS.labels(outcome).observe(seconds)


def images_repeated(outcome: str, count: int) -> None:
    """Count positions settled by another position's download of the same URL."""
    if count:
        IMAGES_REPEATED.labels(outcome).inc(count)


def backend_fault(backend: str, images_given_back: int = 0) -> None:
    """Count a backend's fault met by this process and the images it gave back."""
    BACKEND_FAULTS.labels(backend).inc()
    if images_given_back:
        IMAGES_GIVEN_BACK.labels(backend).inc(images_given_back)


def request_finished(status: str) -> None:
    """Count one request reaching a final status."""
    REQUESTS_FINISHED.labels(status).inc()


def webhook_delivery(result: str | None) -> None:
    """Count one webhook attempt by the delivery's status after it (None: our claim was lost)."""
    WEBHOOK_DELIVERIES.labels(_WEBHOOK_RESULTS.get(result or "", result or "claim_lost")).inc()


# --- multiprocess files ---------------------------------------------------------------


def setup_multiprocess(data_dir: Path) -> Path:
    """Point prometheus_client at this node's metrics directory and claim it.

    The directory is `PROMETHEUS_MULTIPROC_DIR`, else `<data_dir>/metrics`, and
    is shared by every imgbatch process of the node (an API, its workers, and
    separate `imgbatch worker` processes on the same data dir). It is wiped
    when no imgbatch process that claimed it is still alive, i.e. at the first
    start after a node stopped: counters never go down while the node runs.
    """
    given = os.environ.get(ENV)
    path = Path(given) if given else data_dir.resolve() / "metrics"
    path.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        owners = [p for p in path.glob("owner_*") if p.name[6:].isdigit()]
        if not any(_alive(int(p.name[6:])) for p in owners):
            for stale in [*owners, *path.glob("*.db")]:
                stale.unlink(missing_ok=True)
        (path / f"owner_{os.getpid()}").touch()
    os.environ[ENV] = str(path)
    from prometheus_client import values

    # prometheus_client picks its value class at import time; it may predate the variable.
    values.ValueClass = values.get_value_class()
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a previous process with our pid, not us
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _node_registry() -> CollectorRegistry:
    """Counters of every process of this node (multiprocess), else of this process."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(ENV):
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry)
    else:
        registry.register(_Forward(REGISTRY))
    return registry


class _Forward:
    """Expose another registry's metrics inside a fresh registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()


# --- scrape-time gauges from the ledger and the queue ----------------------------------


class _LedgerCollector:
    """Gauges read from the database and the queue at each scrape."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def collect(self) -> Iterator[Metric]:
        from sqlalchemy import func, select

        from imgbatch.ledger import Image, Request
        from imgbatch.ledger import statuses as st

        up = GaugeMetricFamily(
            "imgbatch_backend_up",
            "Whether the scrape could read a backend (1) or not (0).",
            labels=["backend"],
        )
        try:
            with self._ctx.db.session() as session:
                requests = dict(
                    session.execute(
                        select(Request.status, func.count()).group_by(Request.status)
                    ).all()
                )
                images = dict(
                    session.execute(
                        select(Image.status, func.count())
                        .where(Image.status.in_(st.UNFINISHED))
                        .group_by(Image.status)
                    ).all()
                )
        except Exception as exc:
            log.warning("metrics: cannot read the ledger: %s", exc)
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            by_status = GaugeMetricFamily(
                "imgbatch_requests", "Requests in the ledger by status.", labels=["status"]
            )
            for status in (st.PENDING, st.PROCESSING, *st.FINAL):
                by_status.add_metric([status], requests.get(status, 0))
            yield by_status
            unfinished = GaugeMetricFamily(
                "imgbatch_images_unfinished",
                "Images not finished yet (the real backlog; the queue is only a hint).",
                labels=["status"],
            )
            for status in st.UNFINISHED:
                unfinished.add_metric([status], images.get(status, 0))
            yield unfinished
        try:
            depth = self._ctx.queue.depth()
        except Exception as exc:
            log.warning("metrics: cannot read the queue depth: %s", exc)
            up.add_metric(["queue"], 0)
        else:
            up.add_metric(["queue"], 1)
            yield GaugeMetricFamily("imgbatch_queue_depth", "Jobs waiting in the queue.", depth)
        yield up


# --- image hosts cooling down on this node ---------------------------------------------

MAX_HOST_LABELS = 100  # per-host series at most; the count is always exact


class _HostsCollector:
    """Image hosts in a cool-down on this node, read from `fetching.hosts` at each scrape."""

    def __init__(self, board: HostBoard) -> None:
        self._board = board

    def collect(self) -> Iterator[Metric]:
        try:
            cooling = self._board.cooling()
        except OSError as exc:
            log.warning("metrics: cannot read the image hosts' state: %s", exc)
            return
        yield GaugeMetricFamily(
            "imgbatch_fetch_hosts_cooling",
            "Image hosts in a cool-down on this node (throttled or unreachable): their images "
            "wait in the queue.",
            len(cooling),
        )
        left = GaugeMetricFamily(
            "imgbatch_fetch_host_cooldown_seconds",
            f"Seconds of cool-down left per image host (the first {MAX_HOST_LABELS}).",
            labels=["host"],
        )
        for state in cooling[:MAX_HOST_LABELS]:
            left.add_metric([state.origin], round(state.left(), 1))
        yield left


def render(ctx: Context) -> bytes:
    """The Prometheus text exposition for an API process: node counters plus ledger gauges."""
    registry = _node_registry()
    registry.register(_LedgerCollector(ctx))
    registry.register(_HostsCollector(ctx.hosts))
    return generate_latest(registry)


def start_http_server(port: int, host: str = "127.0.0.1", board: HostBoard | None = None) -> None:
    """Serve this node's counters (and hosts cooling down) on `host:port/metrics`, for
    machines that run workers only."""
    from prometheus_client import start_http_server as serve

    registry = _node_registry()
    if board is not None:
        registry.register(_HostsCollector(board))
    serve(port, addr=host, registry=registry)
