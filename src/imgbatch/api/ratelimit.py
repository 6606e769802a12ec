"""Upload rate limits: a token bucket per API key (or per client address when the API is open).

The buckets live in memory, so the limit holds per API process: N processes
behind a load balancer allow up to N times the rate. The table is bounded
(least recently used buckets are evicted), so a flood of distinct addresses
cannot grow it without end; an evicted caller merely starts with a full bucket.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from imgbatch.api.security import require_owner
from imgbatch.errors import ApiError

MAX_BUCKETS = 10_000


class TokenBuckets:
    """`rate_per_minute` requests per minute per key, with bursts up to the same number.

    A rate of 0 or less turns the limit off. `clock` is injectable for tests.
    """

    def __init__(
        self,
        rate_per_minute: int,
        *,
        max_buckets: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(max(rate_per_minute, 0))
        self.refill_per_second = self.capacity / 60.0
        self.max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float | None:
        """Spend one token of `key`'s bucket: None if allowed, else seconds until one is back."""
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.refill_per_second)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = None
            else:
                wait = (1.0 - tokens) / self.refill_per_second
            self._buckets[key] = (tokens, now)  # most recently used last
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        return wait


def caller_scope(request: Request, owner: str | None) -> str:
    """Whose request this is: the API key's digest, or the client address when open."""
    if owner is not None:
        return "key:" + owner
    # Behind a reverse proxy uvicorn takes the address from X-Forwarded-For, but only
    # when the peer is in FORWARDED_ALLOW_IPS (default "127.0.0.1,::1": any local process).
    host = request.client.host if request.client is not None else "unknown"
    return "addr:" + host


def limit_uploads(request: Request, owner: Annotated[str | None, Depends(require_owner)]) -> None:
    """FastAPI dependency: 429 with Retry-After when the caller's upload bucket is empty."""
    buckets: TokenBuckets | None = getattr(request.app.state, "upload_buckets", None)
    if buckets is None:
        return
    wait = buckets.take(caller_scope(request, owner))
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"too many uploads; try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
