"""The job queue adapter: Huey behind a small interface, its backend chosen by `IMGBATCH_QUEUE_URL`.

Holds: `huey_queue` (`JobQueue` on SQLite, Redis or PostgreSQL; jobs carry image ids only) and
`consumer` (Huey's consumer hardened: children die with their parent, quiet back-off while the
queue is down, a pause gate asked before each dequeue).
May import: Huey, `imgbatch.config`, `imgbatch.errors`. The queue is a hint, never the truth,
so it knows nothing of the ledger.
"""

from __future__ import annotations

from .consumer import ConsumerHooks, die_with_parent
from .huey_queue import MIN_JOBS, JobQueue, QueueError, job_batches

__all__ = [
    "MIN_JOBS",
    "ConsumerHooks",
    "JobQueue",
    "QueueError",
    "die_with_parent",
    "job_batches",
]
