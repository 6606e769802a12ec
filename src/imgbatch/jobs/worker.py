"""The worker process: a Huey consumer running image jobs, plus the sweeper and webhook sender.

Image jobs run in forked worker processes (compression is CPU-bound); the
sweeper and the webhook delivery loop are threads in the consumer's main
process, so a slow or dead webhook receiver never blocks image processing.
"""

from __future__ import annotations

import logging
import resource
import threading

from imgbatch import imaging, ledger, metrics
from imgbatch.config import Settings
from imgbatch.context import process_context
from imgbatch.queue import ConsumerHooks

from .gate import process_gate
from .pipeline import process_images
from .sweeper import run_sweeper

log = logging.getLogger(__name__)


def _limit_memory(max_mb: int) -> None:
    """Cap this process's address space so a hostile image fails with MemoryError, not an OOM kill."""
    if max_mb <= 0:
        return
    limit = max_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def run_worker(
    settings: Settings,
    concurrency: int | None = None,
    metrics_port: int | None = None,
    parent_pid: int | None = None,
) -> None:
    """Run the consumer until SIGINT/SIGTERM; with `metrics_port`, serve this node's counters.

    With `parent_pid` (a worker started by `serve`), it also stops when that process is gone.
    """
    workers = concurrency or settings.worker_concurrency
    stop = threading.Event()

    def handle(image_ids: list[int]) -> None:
        process_images(process_context(settings, handle, mark), image_ids)

    def mark(token: int) -> None:
        ledger.see_mark(process_context(settings, handle, mark).db, token)

    ctx = process_context(settings, handle, mark)
    queue = ctx.queue

    @queue.huey.on_startup()
    def _init_worker() -> None:
        # Runs in each worker (process or thread) before it takes jobs.
        # A forked child builds its own engines and queue connection (both keyed by pid)
        # and never closes what it inherited: see db._after_fork_in_child.
        if settings.worker_type == "process":
            _limit_memory(settings.worker_max_rss_mb)
            # No core files: a process the CPU backstop ends (jobs.budget) or a crash
            # must not write an image's pixels (or a 2 GB dump) to disk.
            _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
            resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
        imaging.configure()

    def start_background() -> None:
        from imgbatch.webhooks import run_delivery_loop

        threading.Thread(target=run_sweeper, args=(ctx, stop), name="sweeper", daemon=True).start()
        threading.Thread(
            target=run_delivery_loop, args=(ctx, stop), name="webhooks", daemon=True
        ).start()
        if metrics_port:  # after the workers forked: they must not inherit the listening socket
            from imgbatch.metrics import start_http_server

            start_http_server(metrics_port, settings.host, ctx.hosts)
        log.info(
            "worker started: %d %s workers, queue %s",
            workers,
            settings.worker_type,
            settings.resolved_queue_url.split("@")[-1],
        )

    if not settings.public_base_url and not settings.public_storage_base_url:
        # Workers write output URLs into the ledger: on another machine the default is wrong.
        log.warning(
            "IMGBATCH_PUBLIC_BASE_URL is not set: output URLs will start with %s/files/; "
            "set it to the API's public URL on every worker",
            settings.resolved_public_base_url,
        )
    hooks = ConsumerHooks(
        pause=lambda: process_gate().pause_left(),
        on_queue_fault=lambda: metrics.backend_fault("queue"),
        parent_pid=parent_pid,
    )
    consumer = queue.consumer(workers, settings.worker_type, on_start=start_background, hooks=hooks)
    try:
        consumer.run()
    finally:
        stop.set()
