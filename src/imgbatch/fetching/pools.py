"""Keep-alive urllib3 connection pools pinned to checked IP addresses.

A pool connects to the address `addresses` approved, never to a name, while the
Host header, SNI and certificate check use the host name: this is what makes
DNS rebinding between check and connect impossible.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool

from .addresses import IPAddress, ParsedTarget
from .deadline import GuardedHTTPConnection, GuardedHTTPSConnection

_MAX_POOLS = 256
_POOL_SIZE = 8


class PinnedPools:
    """One pool per (scheme, checked IP, port, host name), the least recently used evicted.

    Thread-safe. Connections are guarded by `deadline`, so a request's total
    deadline also covers the connections these pools hand out.
    """

    def __init__(self, ca_certs: str | None = None) -> None:
        self._ca_certs = ca_certs
        self._pools: OrderedDict[tuple[str, str, int, str], HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def get(self, target: ParsedTarget, ip: IPAddress) -> HTTPConnectionPool:
        """The pool for `target` at `ip`, created on first use."""
        key = (target.scheme, str(ip), target.port, target.host)
        evicted = None
        with self._lock:
            if self._closed:
                raise RuntimeError("Fetcher is closed")
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            common: dict[str, Any] = {"maxsize": _POOL_SIZE, "block": False, "retries": False}
            if target.scheme == "https":
                pool = HTTPSConnectionPool(
                    str(ip),
                    target.port,
                    server_hostname=None if target.is_ip else target.host,
                    assert_hostname=target.host,
                    cert_reqs="CERT_REQUIRED",
                    ca_certs=self._ca_certs,
                    **common,
                )
                pool.ConnectionCls = GuardedHTTPSConnection
            else:
                pool = HTTPConnectionPool(str(ip), target.port, **common)
                pool.ConnectionCls = GuardedHTTPConnection
            self._pools[key] = pool
            if len(self._pools) > _MAX_POOLS:
                evicted = self._pools.popitem(last=False)[1]
        if evicted is not None:
            evicted.close()
        return pool

    def close(self) -> None:
        """Close every pooled connection; `get` raises RuntimeError afterwards."""
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()
