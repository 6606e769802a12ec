"""The upload token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from imgbatch.api.ratelimit import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_burst_up_to_the_rate_then_refused_with_the_wait(clock: Clock) -> None:
    buckets = TokenBuckets(6, clock=clock)  # 6 per minute: one token every 10 s
    assert [buckets.take("a") for _ in range(6)] == [None] * 6
    wait = buckets.take("a")
    assert wait == pytest.approx(10.0)
    clock.now += 4
    assert buckets.take("a") == pytest.approx(6.0)  # refused attempts cost nothing


def test_tokens_come_back_at_the_rate_and_never_above_capacity(clock: Clock) -> None:
    buckets = TokenBuckets(60, clock=clock)  # one per second
    for _ in range(60):
        assert buckets.take("a") is None
    assert buckets.take("a") is not None
    clock.now += 1.0
    assert buckets.take("a") is None
    assert buckets.take("a") is not None
    clock.now += 3600  # an idle hour refills to 60, not 3600
    assert sum(buckets.take("a") is None for _ in range(100)) == 60


def test_keys_are_independent(clock: Clock) -> None:
    buckets = TokenBuckets(1, clock=clock)
    assert buckets.take("key:a") is None
    assert buckets.take("key:a") is not None
    assert buckets.take("key:b") is None
    assert buckets.take("addr:127.0.0.1") is None


def test_memory_is_bounded_by_evicting_the_least_recently_used(clock: Clock) -> None:
    buckets = TokenBuckets(1, max_buckets=100, clock=clock)
    assert buckets.take("busy") is None
    for i in range(1000):
        buckets.take(f"addr:{i}")
        if i % 10 == 0:
            assert buckets.take("busy") is not None  # touched often: never evicted, stays empty
    assert len(buckets) == 100
    assert buckets.take("addr:0") is None  # evicted long ago: a fresh, full bucket


def test_rate_zero_turns_the_limit_off(clock: Clock) -> None:
    buckets = TokenBuckets(0, clock=clock)
    assert not buckets.enabled
    assert all(buckets.take("a") is None for _ in range(1000))
    assert len(buckets) == 0
