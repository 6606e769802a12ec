"""Per-host slots and cool-downs (`fetching.hosts`), and the polite Fetcher that uses them.

The board is real files and real locks, shared by real processes (one is killed
with SIGKILL holding its slots); the Fetcher talks to real loopback hosts.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgbatch.errors import BackendFault, ImageFailure
from imgbatch.fetching import AddressPolicy, Fetcher, FetchLimits, HostBoard, HostState
from imgbatch.fetching.hosts import SlotTimeout
from support.imageserver import ImageServer
from support.service import free_port

A = "http://img.example:80"
B = "http://other.example:80"


def board(tmp_path: Path, per_host: int = 2, **kwargs: float) -> HostBoard:
    return HostBoard(tmp_path / "hosts", per_host, **kwargs)  # type: ignore[arg-type]


# --- slots ---------------------------------------------------------------------------------


def test_a_host_has_per_host_slots_and_other_hosts_their_own(tmp_path: Path) -> None:
    hosts = board(tmp_path, 2, slot_wait=0.2)
    with hosts.slot(A), hosts.slot(A):
        started = time.monotonic()
        busy = f"all 2 download slots for {A} stayed busy"
        with pytest.raises(SlotTimeout, match=busy), hosts.slot(A):
            pass
        assert time.monotonic() - started >= 0.2
        with hosts.slot(B):  # another host is not held up
            pass
    with hosts.slot(A), hosts.slot(A):  # released on leaving the blocks
        pass


def test_threads_never_exceed_the_limit(tmp_path: Path) -> None:
    hosts = board(tmp_path, 3, slot_wait=10)
    lock = threading.Lock()
    now = most = 0

    def work() -> None:
        nonlocal now, most
        for _ in range(5):
            with hosts.slot(A):
                with lock:
                    now += 1
                    most = max(most, now)
                time.sleep(0.01)
                with lock:
                    now -= 1

    threads = [threading.Thread(target=work) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 3


def _hold_slots(directory: str, ready: object, count: int) -> None:
    hosts = HostBoard(Path(directory), 2)
    with hosts.slot(A):
        if count > 1:
            with hosts.slot(A):
                ready.set()  # type: ignore[attr-defined]
                time.sleep(60)
        ready.set()  # type: ignore[attr-defined]
        time.sleep(60)


def test_slots_are_shared_between_processes_and_freed_when_one_is_killed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold_slots, args=(str(tmp_path / "hosts"), ready, 2))
    holder.start()
    try:
        assert ready.wait(10)
        hosts = board(tmp_path, 2, slot_wait=0.3)
        with pytest.raises(SlotTimeout), hosts.slot(A):
            pass
        os.kill(holder.pid, signal.SIGKILL)  # dies holding both: the kernel releases them
        holder.join(10)
        with hosts.slot(A), hosts.slot(A):
            pass
    finally:
        if holder.is_alive():
            holder.kill()
            holder.join()


def test_no_limit_when_per_host_is_zero(tmp_path: Path) -> None:
    hosts = board(tmp_path, 0, slot_wait=0.1)
    with hosts.slot(A), hosts.slot(A), hosts.slot(A):
        pass


# --- cool-downs -------------------------------------------------------------------------------


def test_a_throttled_host_cools_down_for_every_process_of_the_machine(tmp_path: Path) -> None:
    hosts = board(tmp_path)
    assert hosts.state(A).left() == 0 and not hosts.state(A).troubled
    state = hosts.throttled(A, 30, "HTTP 429 from img.example")
    assert 29 < state.left() <= 30
    other_process = board(tmp_path)  # the same directory, as another worker process has it
    assert 29 < other_process.state(A).left() <= 30
    assert other_process.state(A).reason == "HTTP 429 from img.example"
    assert other_process.state(B).left() == 0
    assert [s.origin for s in other_process.cooling()] == [A]
    hosts.answered(A, state)  # an answer during the cool-down does not end it
    assert hosts.state(A).left() > 29


def test_cool_downs_are_clamped_between_a_second_and_the_longest_wait(tmp_path: Path) -> None:
    hosts = board(tmp_path, longest=60)
    assert hosts.throttled(A, 3600, "Retry-After: 3600").left() <= 60
    assert 0 < hosts.throttled(B, 0, "Retry-After: 0").left() <= 1


def test_a_run_of_connection_failures_cools_the_host_twice_as_long_each_time(
    tmp_path: Path,
) -> None:
    hosts = board(tmp_path, first_delay=0.2, max_delay=10)

    def run_of_three() -> tuple[float, HostState, float]:
        assert hosts.unreachable(A, "refused").left() == 0
        assert hosts.unreachable(A, "refused").left() == 0
        before = time.time()
        state = hosts.unreachable(A, "refused")
        return before, state, time.time()

    before, third, after = run_of_three()
    assert before + 0.2 <= third.until <= after + 0.2 and third.streak == 1
    while hosts.state(A).left() > 0:  # let the cool-down pass
        time.sleep(0.02)
    before, fourth, after = run_of_three()
    assert before + 0.4 <= fourth.until <= after + 0.4 and fourth.streak == 2
    while hosts.state(A).left() > 0:
        time.sleep(0.02)
    hosts.answered(A, hosts.state(A))
    assert not hosts.state(A).troubled
    assert list((tmp_path / "hosts").glob("*.state")) == []


def test_a_cool_down_is_logged_once_per_host(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hosts = board(tmp_path)
    with caplog.at_level(logging.INFO, logger="imgbatch.fetching.hosts"):
        for _ in range(5):
            hosts.throttled(A, 10, "HTTP 429 from img.example")
        hosts.throttled(B, 10, "HTTP 503 from other.example")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"image host {A} cooling down for 10 s (HTTP 429")


def test_an_answer_without_trouble_touches_no_file(tmp_path: Path) -> None:
    hosts = board(tmp_path)
    hosts.answered(A, hosts.state(A))
    assert sorted(p.name for p in (tmp_path / "hosts").iterdir()) == []


# --- the polite Fetcher -----------------------------------------------------------------------


@pytest.fixture
def server(image_dir: Path) -> Iterator[ImageServer]:
    with ImageServer(image_dir) as srv:
        yield srv


def polite(tmp_path: Path, **kwargs: float) -> Fetcher:
    hosts = HostBoard(tmp_path / "hosts", 2, first_delay=5.0, **kwargs)  # type: ignore[arg-type]
    return Fetcher(AddressPolicy(allow_private=True), FetchLimits(backoff_base=0.5), hosts=hosts)


def fault_of(call: object) -> BackendFault:
    with pytest.raises(BackendFault) as info:
        call()  # type: ignore[operator]
    return info.value


def test_a_429_with_retry_after_is_given_back_not_slept_on(
    tmp_path: Path, server: ImageServer, image_dir: Path
) -> None:
    with polite(tmp_path) as fetcher, ImageServer(image_dir) as other:
        started = time.monotonic()
        fault = fault_of(
            lambda: fetcher.fetch(server.url("throttle/photo0.jpg?first=1&retry_after=2"))
        )
        assert time.monotonic() - started < 1.5  # no sleep in the worker slot (2 s asked)
        assert (fault.kind, fault.code) == ("fetch", "upstream")
        assert fault.delay is not None and 1.0 < fault.delay <= 2
        assert fault.message == "HTTP 429 from 127.0.0.1"
        # the host cools down: its next image is given back without a request
        again = fault_of(lambda: fetcher.fetch(server.url("photo1.jpg")))
        assert again.message.startswith(f"http://127.0.0.1:{server.port} is cooling down for")
        assert server.requests == ["/throttle/photo0.jpg?first=1&retry_after=2"]
        assert fetcher.fetch(other.url("photo1.jpg")).data  # another host goes on
        time.sleep(2.05)
        assert fetcher.fetch(server.url("throttle/photo0.jpg?first=1")).data[:2] == b"\xff\xd8"
        assert not fetcher.hosts.state(f"http://127.0.0.1:{server.port}").troubled  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("route", "retry_after"),
    [("status/429", None), ("status/503?retry_after=3", 3.0), ("status/429?retry_after=4", 4.0)],
)
def test_throttling_answers_cool_the_host(
    tmp_path: Path, server: ImageServer, route: str, retry_after: float | None
) -> None:
    with polite(tmp_path) as fetcher:
        fault = fault_of(lambda: fetcher.fetch(server.url(route)))
        expected = retry_after or 5.0  # a 429 without Retry-After: THROTTLE_SECONDS
        assert fault.delay is not None and expected - 0.5 < fault.delay <= expected
        assert len(server.requests) == 1


def test_a_503_without_retry_after_is_retried_in_place_and_is_the_images_failure(
    tmp_path: Path, server: ImageServer
) -> None:
    with polite(tmp_path) as fetcher:
        with pytest.raises(ImageFailure) as info:
            fetcher.fetch(server.url("status/503"))
        assert not isinstance(info.value, BackendFault)
        assert info.value.code == "upstream" and len(server.requests) == 3
        assert not fetcher.hosts.state(f"http://127.0.0.1:{server.port}").troubled  # type: ignore[union-attr]


def test_an_unreachable_host_is_given_back_and_cools_after_a_run(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused at once
    with polite(tmp_path) as fetcher:
        started = time.monotonic()
        for _ in range(3):
            fault = fault_of(lambda: fetcher.fetch(f"{dead}/a.jpg"))
            assert (fault.kind, fault.code) == ("fetch", "upstream")
            assert fault.message.startswith("cannot connect to 127.0.0.1")
        # no in-place retries and their back-off sleeps (0.5 s + 1 s per image before)
        assert time.monotonic() - started < 1.5
        assert fault.delay is not None and 4.5 < fault.delay <= 5  # the third cools it down
        cooling = fault_of(lambda: fetcher.fetch(f"{dead}/b.jpg"))
        assert "is cooling down" in cooling.message


def test_a_404_is_the_images_and_ends_a_run_of_failures(
    tmp_path: Path, server: ImageServer
) -> None:
    origin = f"http://127.0.0.1:{server.port}"
    with polite(tmp_path) as fetcher:
        assert fetcher.hosts is not None
        fetcher.hosts.unreachable(origin, "refused")
        with pytest.raises(ImageFailure) as info:
            fetcher.fetch(server.url("missing.jpg"))
        assert info.value.code == "not_found"
        assert not fetcher.hosts.state(origin).troubled


def test_without_a_board_the_fetcher_waits_a_short_retry_after_as_before(
    server: ImageServer,
) -> None:
    with Fetcher(AddressPolicy(allow_private=True), FetchLimits()) as fetcher:
        result = fetcher.fetch(server.url("throttle/photo0.jpg?first=1&retry_after=1"))
        assert result.attempts == 2
