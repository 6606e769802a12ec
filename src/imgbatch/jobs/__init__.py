"""The work: the per-job pipeline, the sweeper and the worker process.

Holds: `pipeline` (claim → fetch → compress → store → record → finalize once), `lifecycle`
(cancel and retry: the ledger decides, the service finishes the work), `removal` (deleting
requests, by a user or the retention period: objects first, then rows), `sweeper` (finds lost
and unqueued work again) and `worker` (Huey consumer processes plus the sweeper and webhook
sender threads).
May import: webhooks, the ledger, storage, fetching, queue, imaging, `imgbatch.context`,
`imgbatch.metrics`. Never the ways in (api, web, cli).
"""

from __future__ import annotations

from .lifecycle import cancel, finish_cancel, retry
from .pipeline import finalize, process_images
from .removal import delete, purge_quietly
from .sweeper import run_sweeper, sweep_once
from .worker import run_worker

__all__ = [
    "cancel",
    "delete",
    "finalize",
    "finish_cancel",
    "process_images",
    "purge_quietly",
    "retry",
    "run_sweeper",
    "run_worker",
    "sweep_once",
]
