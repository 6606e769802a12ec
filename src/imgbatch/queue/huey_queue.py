"""The job queue: Huey behind a small interface, its backend chosen by `IMGBATCH_QUEUE_URL`.

- `sqlite:///path` — Huey's SQLite storage (embedded default)
- `redis://host:port/db` — Huey's Redis storage (blocking pops, no polling)
- `postgresql://…` — Huey's SQL storage on PostgreSQL (peewee + psycopg 3,
  `FOR UPDATE SKIP LOCKED`)

A job carries only image ids: a few images (consecutive ones of a request when
an upload enqueues them), which a worker claims, stores and records together
(`job_batches`). The queue is a hint, never the truth: a lost job is found
again by the sweeper, a duplicate one is a no-op claim. That is why the SQLite
queue runs with `synchronous=NORMAL`.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from huey import Huey, RedisHuey
from huey.consumer import Consumer
from huey.contrib.sql_huey import SqlStorage
from huey.storage import PriorityRedisStorage, SqliteStorage

from imgbatch.config import redact_url
from imgbatch.errors import first_line

from . import fairness
from .consumer import ConsumerHooks, build_consumer

log = logging.getLogger(__name__)

TASK_NAME = "process_images"
MARK_TASK_NAME = "queue_mark"  # the sweeper's mark (see `jobs.sweeper`)
_SINGLE_TASK_NAME = "process_image"
QUEUE_NAME = "imgbatch"


class QueueError(Exception):
    """The queue backend is misconfigured or unreachable."""


_INHERITED: list[Any] = []  # connections inherited across fork: kept open, never used


def _reset_in_forked_child(storage: Any) -> None:
    """Make a forked child open its own connection instead of using its parent's.

    Huey's consumer closes the storage before it forks its workers, but it forks
    again later (restarting a dead worker) while the sweeper thread may hold a
    connection or a lock; a child must never share a socket or inherit a held lock.
    """
    ref = weakref.ref(storage)

    def reset() -> None:
        alive = ref()
        if alive is not None:
            alive.forget_connection()

    os.register_at_fork(after_in_child=reset)


class _SqliteStorage(SqliteStorage):
    """Huey's SQLite storage with `synchronous=NORMAL` and a bulk enqueue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _reset_in_forked_child(self)

    def forget_connection(self) -> None:
        # Keep the parent's connection alive, never close it here: closing an inherited
        # SQLite connection in a child can make SQLite think it is the last user of the
        # database and delete the WAL file that the parent is still writing to.
        inherited: Any = getattr(self, "_conn", None)
        if inherited is not None:
            _INHERITED.append(inherited)
        setattr(self, "_conn", None)  # noqa: B010 - Huey's attribute, untyped
        self.lock = threading.Lock()

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn

    def enqueue_many(self, messages: Sequence[bytes], priorities: Sequence[float]) -> None:
        with self.db(commit=True) as cursor:
            cursor.executemany(
                "insert into task (queue, data, priority) values (?, ?, ?)",
                [
                    (self.name, self.to_blob(message), priority)
                    for message, priority in zip(messages, priorities, strict=True)
                ],
            )

    def priority_range(self) -> tuple[float, float] | None:
        """(highest, lowest) priority waiting, None when the queue is empty."""
        with self.db() as cursor:  # one aggregate per query: each is one index lookup
            cursor.execute("select max(priority) from task where queue = ?", (self.name,))
            (high,) = cursor.fetchone()
            cursor.execute("select min(priority) from task where queue = ?", (self.name,))
            (low,) = cursor.fetchone()
        return None if high is None else (float(high), float(low))


class _SqliteHuey(Huey):
    storage_class = _SqliteStorage


_PG_SCHEMA_LOCK = 0x68756579  # "huey": serialises table creation by workers starting at once


class _PgStorage(SqlStorage):
    """Huey's SQL storage on PostgreSQL through peewee + psycopg 3 (`FOR UPDATE SKIP LOCKED`).

    Its tables are named `huey_*` so the queue can share the ledger's database;
    they are created under an advisory lock (concurrent `CREATE TABLE IF NOT
    EXISTS` races in PostgreSQL); a forked child opens its own connection.
    """

    def __init__(self, name: str, database: Any, **kwargs: Any) -> None:
        super().__init__(name, database=database, **kwargs)
        _reset_in_forked_child(self)

    def forget_connection(self) -> None:
        self.database._state.reset()
        self.database._lock = threading.Lock()

    def create_models(self) -> Any:
        kv, schedule, task, counter = super().create_models()
        for model in (kv, schedule, task, counter):
            model._meta.set_table_name("huey_" + model._meta.table_name)
        # Huey's index object was bound to the old table name: build it again.
        task._meta.indexes = [i for i in task._meta.indexes if isinstance(i, tuple)]
        task.add_index(task.priority.desc(), task.id)
        return kv, schedule, task, counter

    def create_tables(self) -> None:
        with self.database, self.database.atomic():
            self.database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
            self.database.create_tables([self.KV, self.Schedule, self.Task, self.Counter])

    def enqueue_many(self, messages: Sequence[bytes], priorities: Sequence[float]) -> None:
        self.check_conn()
        with self.atomic():
            self.Task.insert_many(
                [
                    {"queue": self.name, "data": m, "priority": p}
                    for m, p in zip(messages, priorities, strict=True)
                ]
            ).execute()

    def priority_range(self) -> tuple[float, float] | None:
        """(highest, lowest) priority waiting, None when the queue is empty."""
        from peewee import fn

        self.check_conn()
        waiting = self.Task.select().where(self.Task.queue == self.name)
        high = waiting.select(fn.MAX(self.Task.priority)).scalar()  # one index lookup each
        low = waiting.select(fn.MIN(self.Task.priority)).scalar()
        return None if high is None else (float(high), float(low))

    def queue_size(self) -> int:
        self.check_conn()  # reconnect after a database restart instead of failing forever
        return int(super().queue_size())


class _PgHuey(Huey):
    storage_class = _PgStorage


class _RedisStorage(PriorityRedisStorage):
    """Huey's Redis priority storage (a sorted set, `BZPOPMIN`) under a key of its own.

    Before jobs had priorities the queue was a list at `huey.redis.imgbatch`; the sorted
    set lives at that name plus `.fair`, and `adopt_legacy` moves what an older release
    still pushes to the list (in a rolling upgrade) into it, at the front.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.legacy_key: str = getattr(self, "queue_key")  # noqa: B009 - Huey's, untyped
        self.queue_key = self.legacy_key + ".fair"

    def enqueue_many(self, messages: Sequence[bytes], priorities: Sequence[float]) -> None:
        # Huey's member format: an 8-byte big-endian microsecond prefix (dropped on
        # dequeue) orders equal scores by insertion and keeps members unique.
        now = int(time.time() * 1e6)
        members = {
            struct.pack(">Q", now + i) + message: -priority
            for i, (message, priority) in enumerate(zip(messages, priorities, strict=True))
        }
        self.conn.zadd(self.queue_key, members)

    def priority_range(self) -> tuple[float, float] | None:
        """(highest, lowest) priority waiting, None when the queue is empty."""
        first = self.conn.zrange(self.queue_key, 0, 0, withscores=True)
        if not first:
            return None
        last = self.conn.zrange(self.queue_key, -1, -1, withscores=True)
        return -float(first[0][1]), -float(last[0][1])

    def queue_size(self) -> int:
        return int(self.conn.zcard(self.queue_key)) + int(self.conn.llen(self.legacy_key))

    def adopt_legacy(self, priority: float, most: int = 10_000) -> int:
        """Move jobs an older release pushed to the list into the sorted set, oldest first."""
        moved = 0
        while moved < most:
            batch = self.conn.rpop(self.legacy_key, min(1000, most - moved))
            if not batch:
                break
            self.enqueue_many(batch, [priority] * len(batch))
            moved += len(batch)
        return moved


class _RedisHuey(RedisHuey):
    storage_class = _RedisStorage


def _bulk_enqueue(storage: Any, messages: Sequence[bytes], priorities: Sequence[float]) -> None:
    """One round trip per batch where the backend allows it, else one per message."""
    if hasattr(storage, "enqueue_many"):  # SQLite, PostgreSQL, Redis
        storage.enqueue_many(messages, priorities)
    else:
        for message, priority in zip(messages, priorities, strict=True):
            storage.enqueue(message, priority)


def build_huey(url: str) -> Huey:
    """A Huey instance for a queue URL; QueueError naming IMGBATCH_QUEUE_URL when unusable."""
    scheme = urlsplit(url).scheme.lower()
    common: dict[str, Any] = {"results": False, "utc": True}
    try:
        if scheme == "sqlite":
            path = url.split("sqlite:///", 1)[-1]
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return _SqliteHuey(QUEUE_NAME, filename=path, timeout=60, **common)
        if scheme in ("redis", "rediss", "unix"):
            return _RedisHuey(QUEUE_NAME, url=url, blocking=True, read_timeout=1, **common)
        if scheme.startswith("postgres"):
            from playhouse.db_url import connect

            rest = url.split("://", 1)[1]
            # psycopg 3 explicitly: peewee would pick psycopg2 whenever it is importable.
            database = connect("psycopg3://" + rest)
            return _PgHuey(QUEUE_NAME, database=database, **common)
    except Exception as exc:
        raise QueueError(
            f"IMGBATCH_QUEUE_URL: cannot use the queue at {redact_url(url)} "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from exc
    raise QueueError(
        f"IMGBATCH_QUEUE_URL: unsupported scheme {scheme!r} (use sqlite:///, redis:// or postgresql://)"
    )


MIN_JOBS = 32  # a request is spread over at least this many jobs, when it has the images


def job_batches(image_ids: Sequence[int], most: int) -> list[list[int]]:
    """Split image ids, in order, into jobs of at most `most` ids.

    Jobs are only as large as keeps a request spread over `MIN_JOBS` jobs, so a
    small request still spreads over many workers, and a large one pays the per-job
    costs (dequeue, claim and record transactions, fsyncs) once per `most` images.
    """
    size = max(1, min(most, len(image_ids) // MIN_JOBS))
    return [list(image_ids[i : i + size]) for i in range(0, len(image_ids), size)]


class JobQueue:
    """Enqueue image jobs and run consumers, whatever the backend."""

    def __init__(
        self,
        url: str,
        handler: Callable[[list[int]], None] | None = None,
        images_per_job: int = 8,
        on_mark: Callable[[int], None] | None = None,
    ) -> None:
        self.url = url
        self.huey = build_huey(url)
        self.images_per_job = images_per_job
        self._handler = handler
        self._task = self.huey.task(name=TASK_NAME, retries=0)(self._run)
        # Jobs of one image, as enqueued before jobs had several: kept for a release so a
        # rolling upgrade runs what the old API and sweepers enqueue instead of dropping it.
        self._single_task = self.huey.task(name=_SINGLE_TASK_NAME, retries=0)(self._run_one)
        self._on_mark = on_mark
        self._mark_task = self.huey.task(name=MARK_TASK_NAME, retries=0)(self._run_mark)

    def _run(self, image_ids: list[int]) -> None:
        if self._handler is None:
            raise RuntimeError("this JobQueue was built to enqueue only")
        self._handler(image_ids)

    def _run_one(self, image_id: int) -> None:
        self._run([image_id])

    def _run_mark(self, token: int) -> None:
        if self._on_mark is not None:
            self._on_mark(token)

    def _tags(self) -> tuple[float, float]:
        """(front, back): the tags of the first and the last job waiting (0, 0 when empty)."""
        waiting = self.huey.storage.priority_range()
        if waiting is None:
            return 0.0, 0.0
        high, low = waiting
        return fairness.tag_of(high), fairness.tag_of(low)

    def enqueue_job(self, image_ids: Sequence[int]) -> None:
        """Enqueue exactly one job of these images (a job put back whole), at the front."""
        front, _ = self._tags()
        message = self.huey.serialize_task(self._task.s(list(image_ids)))
        _bulk_enqueue(self.huey.storage, [message], [fairness.priority(front)])

    def enqueue_mark(self, token: int) -> None:
        """Enqueue the sweeper's mark `token` behind every job waiting now."""
        _, back = self._tags()
        message = self.huey.serialize_task(self._mark_task.s(token))
        _bulk_enqueue(self.huey.storage, [message], [fairness.priority(back + 1)])

    def enqueue(
        self,
        image_ids: Sequence[int],
        chunk: int = 1000,
        images_per_job: int | None = None,
        behind: int = 0,
    ) -> None:
        """Enqueue the images as jobs of a few ids each (`job_batches`), in bulk, taking
        turns with the work waiting (`fairness`); `behind`: images the same API key still
        has waiting or in work, which this work queues behind."""
        jobs = job_batches(image_ids, images_per_job or self.images_per_job)
        front, _ = self._tags()
        tags = fairness.job_tags(front + behind, jobs)
        for start in range(0, len(jobs), chunk):
            part = jobs[start : start + chunk]
            messages = [self.huey.serialize_task(self._task.s(job)) for job in part]
            priorities = [fairness.priority(t) for t in tags[start : start + chunk]]
            _bulk_enqueue(self.huey.storage, messages, priorities)

    def adopt_legacy(self) -> int:
        """Redis: move jobs an older release pushed to the old list into the queue (0 elsewhere)."""
        adopt = getattr(self.huey.storage, "adopt_legacy", None)
        if adopt is None:
            return 0
        front, _ = self._tags()
        return int(adopt(fairness.priority(front)))

    def depth(self) -> int:
        """Jobs waiting in the queue."""
        return int(self.huey.pending_count())

    def check(self) -> None:
        """Raise QueueError with a one-line reason when the backend cannot be reached."""
        try:
            self.huey.pending_count()
        except Exception as exc:
            raise QueueError(
                f"IMGBATCH_QUEUE_URL: queue backend at {redact_url(self.url)} unreachable "
                f"({type(exc).__name__}: {first_line(exc)})"
            ) from exc

    def flush(self) -> None:
        self.huey.flush()

    def close(self) -> None:
        """Close this process's connection to the queue backend."""
        self.huey.storage.close()

    def consumer(
        self,
        workers: int,
        worker_type: str = "process",
        on_start: Callable[[], None] | None = None,
        hooks: ConsumerHooks | None = None,
    ) -> Consumer:
        """A Huey consumer (see `consumer`); `on_start` runs in its main process after workers fork."""
        return build_consumer(
            self.huey,
            workers,
            worker_type,
            on_start,
            hooks or ConsumerHooks(),
            periodic=False,
            # We schedule nothing for later; the scheduler's read of the schedule table
            # locks a SQLite queue, so it runs once a minute instead of every second.
            scheduler_interval=60,
            initial_delay=0.05,
            backoff=1.5,
            max_delay=0.1,
            check_worker_health=True,
            health_check_interval=5,
        )
