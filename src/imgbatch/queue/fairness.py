"""Fair turns in the queue: every job carries a virtual start time ("tag") as its priority.

A FIFO queue made every request wait behind every image of every request before it: a
5-image request waited 85 s behind a 5,000-image one, and in the security review, behind
two million. Start-time fair queuing fixes the order at enqueue time, so no storage needs
anything but a priority (Huey's SQLite and SQL storages order by priority, then id; its
Redis priority storage is a sorted set):

- A request's jobs get consecutive tags `start, start + n1, start + n1 + n2, ...` (n: the
  images of each job), so its jobs run in order and a larger job counts for more.
- `start` is the tag of the job at the front of the queue (the queue's "virtual time"):
  a newcomer's first job runs next, its later ones alternate with the jobs of every
  other request waiting, and two requests waiting share the workers about equally.
- With API keys, `start` also adds the images the same key still has waiting or in work
  (`behind`): a key's next request queues behind its own backlog, not behind everyone's,
  so many requests from one key do not add up to more than one key's share.
- Work put back (the sweeper, a retry) starts at the front; the sweeper's mark goes
  behind everything waiting (`tail + 1`), so what was enqueued before it leaves before it.

Higher priorities run first in Huey, so a job's priority is `-tag`.
"""

from __future__ import annotations

from collections.abc import Sequence


def job_tags(start: float, jobs: Sequence[Sequence[int]]) -> list[float]:
    """The tag of each job: `start` for the first, then plus the images before it."""
    tags: list[float] = []
    tag = start
    for job in jobs:
        tags.append(tag)
        tag += len(job)
    return tags


def priority(tag: float) -> float:
    """Huey's priority for a tag (higher runs first)."""
    return -float(tag)


def tag_of(priority: float) -> float:
    return -float(priority)
