"""The queue contract, run against every backend: SQLite file, Redis, PostgreSQL.

A real consumer process forks real worker processes (as `imgbatch worker`
does), so a backend whose connection leaks across fork() fails here.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from imgbatch.queue import MIN_JOBS, JobQueue, QueueError, job_batches
from support.backends import redis_database, sa_to_libpq
from support.databases import postgres_database


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.scaleout),
        pytest.param("postgresql", marks=pytest.mark.scaleout),
    ]
)
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
    elif request.param == "redis":
        with redis_database() as url:
            yield url
    else:
        with postgres_database() as url:
            yield sa_to_libpq(url)


def _record(path: str, image_ids: list[int]) -> None:
    """The job handler: one line per image of the job, appended atomically, then a little work."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, "".join(f"{i} {os.getpid()}\n" for i in image_ids).encode())
    finally:
        os.close(fd)
    time.sleep(0.002)


def _consume(url: str, path: str, workers: int, late_ids: list[int]) -> None:
    """A consumer process like `imgbatch worker`: the queue is opened and used before the
    workers fork, and used again from a thread of the parent while they run (the sweeper)."""
    queue = JobQueue(url, handler=partial(_record, path))
    queue.depth()  # the parent holds a live connection when the consumer forks

    def late_enqueue() -> None:
        queue.enqueue(late_ids)

    consumer = queue.consumer(
        workers, "process", on_start=lambda: threading.Thread(target=late_enqueue).start()
    )
    consumer.run()


def _runs(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [(int(a), int(b)) for a, b in (line.split() for line in lines if line)]


def test_enqueue_depth_and_consume_once_per_id(queue_url: str, tmp_path: Path) -> None:
    out = tmp_path / "runs.txt"
    queue = JobQueue(queue_url)
    first = list(range(1, 601))
    late = list(range(601, 801))
    queue.enqueue(first, chunk=25)  # several bulk round trips
    assert queue.depth() == len(job_batches(first, queue.images_per_job)) == 75

    ctx = multiprocessing.get_context("fork")
    consumer = ctx.Process(target=_consume, args=(queue_url, str(out), 3, late))
    consumer.start()
    try:
        deadline = time.monotonic() + 60
        while len(_runs(out)) < len(first) + len(late):
            assert time.monotonic() < deadline, f"{len(_runs(out))} jobs ran"
            assert consumer.is_alive(), "the consumer died"
            time.sleep(0.05)
        time.sleep(0.3)  # a duplicate delivery would show up now
        runs = _runs(out)
        counts = collections.Counter(image_id for image_id, _ in runs)
        assert sorted(counts) == first + late
        assert set(counts.values()) == {1}, "a job ran more than once"
        assert len({pid for _, pid in runs}) >= 2, "jobs ran in one worker process only"
        assert os.getpid() not in {pid for _, pid in runs}
        assert consumer.pid not in {pid for _, pid in runs}, "jobs must run in forked workers"
        assert queue.depth() == 0
    finally:
        if consumer.is_alive() and consumer.pid is not None:
            os.kill(consumer.pid, signal.SIGINT)  # Huey: finish running jobs, then exit
        consumer.join(20)
        if consumer.is_alive():
            consumer.kill()
            consumer.join(5)
    assert consumer.exitcode == 0


@pytest.mark.parametrize("count", [0, 1, 5, MIN_JOBS, 2 * MIN_JOBS + 1, 100, 1000, 10_001])
@pytest.mark.parametrize("most", [1, 8, 50])
def test_job_batches_keep_order_and_spread_small_requests(count: int, most: int) -> None:
    ids = list(range(100, 100 + count))
    jobs = job_batches(ids, most)
    assert [i for job in jobs for i in job] == ids  # every id once, in input order
    assert all(1 <= len(job) <= most for job in jobs)
    assert len(jobs) >= min(count, MIN_JOBS)  # a small request still reaches every worker
    if count >= MIN_JOBS * most:
        assert all(len(job) == most for job in jobs[:-1])  # a large one pays per-job costs rarely


def test_many_processes_open_the_queue_at_once(queue_url: str) -> None:
    """Workers starting together each create the queue's tables; none may fail."""
    errors: list[BaseException] = []

    def open_queue() -> None:
        try:
            JobQueue(queue_url).enqueue([1])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_queue) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert JobQueue(queue_url).depth() == 6


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:1/0",
        "postgresql://postgres:s3cret@127.0.0.1:1/imgbatch",
        "sqlite:///{not_a_dir}/queue.db",
        "amqp://127.0.0.1/",
    ],
)
def test_check_names_the_setting_in_one_line(url: str, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("not a directory")
    url = url.format(not_a_dir=not_a_dir)
    with pytest.raises(QueueError) as caught:
        JobQueue(url).check()
    message = str(caught.value)
    assert message.startswith("IMGBATCH_QUEUE_URL: ")
    assert "\n" not in message
    assert "s3cret" not in message


def test_a_job_of_one_image_from_before_jobs_had_several_still_runs(tmp_path: Path) -> None:
    """A rolling upgrade: the old API or sweeper enqueued `process_image(image_id)`."""
    ran: list[list[int]] = []
    queue = JobQueue(f"sqlite:///{tmp_path / 'queue.db'}", handler=ran.append)
    queue.huey.enqueue(queue._single_task.s(42))
    task = queue.huey.dequeue()
    assert task is not None and task.name == "process_image"
    queue.huey.execute(task)
    assert ran == [[42]]
    queue.close()


@pytest.mark.parametrize("value", [0, -1, 101])
def test_images_per_job_outside_its_range_is_refused(value: int) -> None:
    from pydantic import ValidationError

    from imgbatch.config import Settings

    with pytest.raises(ValidationError, match="images_per_job"):
        Settings(_env_file=None, images_per_job=value)  # type: ignore[call-arg]


# --- fair turns (`queue.fairness`) ----------------------------------------------------------


def _drain(queue: JobQueue) -> list[tuple[str, object]]:
    """Every task in the order a worker takes them: (task name, its argument)."""
    order: list[tuple[str, object]] = []
    while (task := queue.huey.dequeue()) is not None:
        order.append((task.name, task.args[0]))
    return order


def test_a_later_request_takes_turns_with_an_earlier_large_one(queue_url: str) -> None:
    queue = JobQueue(queue_url, images_per_job=8)
    big = list(range(1, 1001))  # 125 jobs of 8
    queue.enqueue(big)
    for _ in range(3):  # a worker took the first jobs of the large request
        assert queue.huey.dequeue() is not None
    small = [5001, 5002, 5003]  # 3 jobs of 1 image
    queue.enqueue(small)
    jobs = [ids for name, ids in _drain(queue) if name == "process_images"]
    first_small = jobs.index([5001])
    assert first_small <= 1  # at most one job of the large request before it
    assert jobs[first_small : first_small + 3] == [[5001], [5002], [5003]]
    assert [i for job in jobs if job[0] < 5000 for i in job] == big[24:]  # its order kept
    queue.close()


def test_two_large_requests_share_the_queue_and_a_backlog_queues_behind_itself(
    queue_url: str,
) -> None:
    queue = JobQueue(queue_url, images_per_job=8)
    queue.enqueue(list(range(1, 801)))  # A: 100 jobs
    queue.enqueue(list(range(10_001, 10_801)))  # B, another key: 100 jobs
    queue.enqueue([20_001], behind=800)  # A again: behind A's own 800 images
    jobs = [ids for name, ids in _drain(queue) if name == "process_images"]
    owners = ["A" if job[0] < 10_000 else "B" if job[0] < 20_000 else "A2" for job in jobs]
    assert owners[:6] == ["A", "B", "A", "B", "A", "B"]  # they alternate
    assert owners.index("A2") > 150  # after most of A's first request, not at the front
    queue.close()


def test_the_mark_goes_behind_and_work_put_back_goes_ahead(queue_url: str) -> None:
    queue = JobQueue(queue_url, images_per_job=8)
    queue.enqueue(list(range(1, 81)))
    queue.enqueue_mark(7)
    queue.enqueue_job([999])
    queue.enqueue([555], behind=0)
    order = _drain(queue)
    assert ("process_images", [999]) in order[:2]  # level with the job at the front
    assert ("process_images", [555]) in order[:3]
    assert order[-1] == ("queue_mark", 7)  # behind all 40 jobs waiting when it was sent
    queue.close()


def test_job_tags_count_the_images_before_each_job() -> None:
    from imgbatch.queue.fairness import job_tags, priority, tag_of

    assert job_tags(10, [[1, 2, 3], [4], [5, 6]]) == [10, 13, 14]
    assert job_tags(0, []) == []
    assert tag_of(priority(42.0)) == 42.0 and priority(1) > priority(2)


@pytest.mark.scaleout
def test_redis_jobs_pushed_by_an_older_release_are_adopted() -> None:
    with redis_database() as url:
        old = JobQueue(url)
        message = old.huey.serialize_task(old._task.s([77]))
        storage = old.huey.storage
        storage.conn.lpush(storage.legacy_key, message)  # what RedisHuey's list queue held
        assert old.depth() == 1
        queue = JobQueue(url)
        queue.enqueue([1, 2])
        assert queue.adopt_legacy() == 1
        assert queue.adopt_legacy() == 0
        order = _drain(queue)
        assert ("process_images", [77]) in order[:2] and len(order) == 3
        old.close()
        queue.close()
