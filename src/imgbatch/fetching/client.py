"""The one HTTP client of imgbatch: image downloads and webhook POSTs, SSRF-safe.

Every hop is: parse and check the URL (`addresses.check_url`), resolve the host
once, check every address it resolved to, then connect to one of those checked
addresses by IP, sending the original host in the Host header and, for https,
as SNI and as the name the certificate must match. Nothing resolves the name a
second time, so DNS rebinding between check and connect is impossible.

urllib3 is the transport, chosen by `bench/fetch_clients.py`: ~0.2 ms client CPU
per 2 MP image (httpx ~0.5, aiohttp ~0.15 but async), and it lets a pool be
pinned to an IP while SNI and certificate checks use the host name.
Workers are synchronous threads or processes, so the Fetcher is synchronous and
thread-safe; create it after forking.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urljoin

from urllib3 import BaseHTTPResponse, Timeout
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

from imgbatch import __version__
from imgbatch.errors import BackendFault, ImageFailure

from .addresses import (
    AddressPolicy,
    IPAddress,
    ParsedTarget,
    check_address,
    check_url,
    parse_host_ip,
)
from .deadline import Guard, Watchdog
from .failures import StatusFailure, host_trouble, status_failure, transport_failure
from .hosts import HostBoard, HostState, SlotTimeout
from .pools import PinnedPools

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]

_MiB = 1024 * 1024
_CHUNK = 64 * 1024
_DISCARD_CAP = 64 * 1024  # bodies of redirects, errors and webhook answers
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_RETRY_AFTER = 5.0  # longer waits are left to the caller's own scheduling


@dataclass(frozen=True)
class FetchLimits:
    """Bounds on one `Fetcher.fetch`: time, size, redirects and retries."""

    connect_timeout: float = 5.0
    total_timeout: float = 30.0  # the whole fetch: every hop, attempt and backoff
    max_bytes: int = 25 * _MiB
    max_redirects: int = 5
    attempts: int = 3
    backoff_base: float = 0.5

    @classmethod
    def from_settings(cls, settings: Any) -> FetchLimits:
        return cls(
            connect_timeout=settings.fetch_connect_timeout,
            total_timeout=settings.fetch_total_timeout,
            max_bytes=settings.fetch_max_bytes,
            max_redirects=settings.fetch_max_redirects,
            attempts=settings.fetch_attempts,
            backoff_base=settings.fetch_backoff_base,
        )


@dataclass(frozen=True)
class FetchResult:
    data: bytes
    content_type: str | None
    final_url: str  # normalized, after redirects
    attempts: int


@dataclass(frozen=True)
class PostResult:
    status: int
    headers: dict[str, str]  # lower-case names
    elapsed: float


# --- resolving -----------------------------------------------------------------------


def system_resolver(host: str, port: int) -> list[str]:
    """Addresses of `host` from getaddrinfo, in its order, without duplicates."""
    addresses: list[str] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    return addresses


def resolve_checked(
    target: ParsedTarget, policy: AddressPolicy, resolver: Resolver
) -> list[IPAddress]:
    """Resolve `target.host` once and check every address; any forbidden one refuses all.

    Refusing when *one* address is forbidden (rather than skipping it) stops a
    name that answers both a public and a private address from being used to
    reach the private one.
    """
    if target.is_ip:
        ip = parse_host_ip(target.host)
        assert ip is not None
        addresses = [ip]
    else:
        try:
            answers = resolver(target.host, target.port)
        except socket.gaierror as exc:
            transient = exc.errno == socket.EAI_AGAIN
            raise ImageFailure(
                "upstream", f"cannot resolve {target.host}", retryable=transient
            ) from exc
        except OSError as exc:
            raise ImageFailure("upstream", f"cannot resolve {target.host}") from exc
        addresses = []
        for answer in answers:
            ip = parse_host_ip(answer)
            if ip is None:
                raise ImageFailure("upstream", f"resolver gave a non-address for {target.host}")
            addresses.append(ip)
        if not addresses:
            raise ImageFailure("upstream", f"{target.host} has no addresses")
    for ip in addresses:
        check_address(ip, target.host, policy, target.port)
    return addresses


def check_webhook_url(url: str, policy: AddressPolicy, resolver: Resolver | None = None) -> None:
    """Validate a webhook URL when it is registered: scheme, host, and its current addresses.

    Raises ImageFailure("bad_url" | "blocked_address"). The same checks run
    again at every send, since DNS answers may change in between.
    """
    target = check_url(url, policy)
    try:
        resolve_checked(target, policy, resolver or system_resolver)
    except ImageFailure as failure:
        if failure.code == "blocked_address":
            raise
        raise ImageFailure("bad_url", failure.message) from failure


class Fetcher:
    """SSRF-safe HTTP client: `fetch` images, `post` webhooks. Thread-safe; `close()` when done.

    Keeps keep-alive connections in one urllib3 pool per (scheme, checked IP,
    port, host name). `resolver(host, port)` returns address strings; tests
    inject one to map names to loopback. `ca_certs` overrides the system CAs.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        limits: FetchLimits,
        resolver: Resolver | None = None,
        user_agent: str = f"imgbatch/{__version__}",
        *,
        ca_certs: str | None = None,
        hosts: HostBoard | None = None,
    ) -> None:
        self.policy = policy
        self.limits = limits
        self.user_agent = user_agent
        self._resolver = resolver or system_resolver
        self.hosts = hosts
        self._pools = PinnedPools(ca_certs)
        self._watchdog = Watchdog()

    # --- public ----------------------------------------------------------------------

    def fetch(self, url: str) -> FetchResult:
        """GET an image, following redirects and retrying transient failures.

        Raises ImageFailure: bad_url, blocked_address, not_found (404/410),
        upstream (other statuses, redirects, connection errors), timeout,
        too_large. Transient ones carry `retryable=True`.

        With a `HostBoard` (`hosts`), the fetch is polite and a host's trouble is not
        waited out in place: a host cooling down, throttling (429, 503 + Retry-After)
        or unreachable raises `BackendFault("fetch")` at once, with the cool-down as
        its delay, so the caller gives the image back and goes on with other hosts.
        At most `hosts.per_host` fetches per host run at once on the machine.
        """
        if self.hosts is None:
            return self._fetch(url, polite=False)
        first = check_url(url, self.policy)
        origin = first.origin
        seen = self.hosts.state(origin)
        if seen.left() > 0:
            raise _cooling(origin, seen)
        try:
            with self.hosts.slot(origin):
                result = self._fetch(url, polite=True, first=first)
        except SlotTimeout as busy:
            raise BackendFault("fetch", str(busy), code="upstream") from None
        except ImageFailure as failure:
            trouble = host_trouble(failure)
            if trouble is None:
                if isinstance(failure, StatusFailure):
                    self.hosts.answered(origin, seen)  # it answered, about this image
                raise
            kind, seconds = trouble
            if kind == "throttled":
                state = self.hosts.throttled(origin, seconds or 0.0, failure.message)
            else:
                state = self.hosts.unreachable(origin, failure.message)
            raise BackendFault(
                "fetch", failure.message, delay=state.left() or None, code=failure.code
            ) from failure
        self.hosts.answered(origin, seen)
        return result

    def _fetch(self, url: str, *, polite: bool, first: ParsedTarget | None = None) -> FetchResult:
        deadline = time.monotonic() + self.limits.total_timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                data, content_type, final_url = self._fetch_once(url, deadline, first)
                return FetchResult(data, content_type, final_url, attempt)
            except ImageFailure as failure:
                if polite and host_trouble(failure) is not None:
                    raise  # the host's trouble: given back, never slept on in a worker slot
                delay = self._backoff(attempt, failure)
                if delay is None or time.monotonic() + delay >= deadline:
                    if attempt > 1:
                        message = f"{failure.message} (after {attempt} attempts)"
                        raise ImageFailure(
                            failure.code, message, retryable=failure.retryable
                        ) from failure
                    raise
                log.debug("fetch attempt %d failed (%s), retrying", attempt, failure.message)
                time.sleep(delay)

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> PostResult:
        """POST a webhook once: no redirects followed (a 3xx is returned), no retries.

        Raises ImageFailure: bad_url, blocked_address, upstream, timeout.
        """
        start = time.monotonic()
        deadline = start + timeout
        target = check_url(url, self.policy)
        addresses = resolve_checked(target, self.policy, self._resolver)
        sent = {"User-Agent": self.user_agent, **headers, "Host": target.authority}
        with self._watchdog.guard(deadline) as guard:
            try:
                response = self._send("POST", target, addresses, deadline, body, sent)
                try:
                    answer = {name.lower(): response.headers[name] for name in response.headers}
                    self._discard(response, guard)
                except BaseException:
                    self._abandon(response, guard)
                    raise
            except (HTTPError, OSError) as exc:
                raise transport_failure(
                    exc, target.host, expired=guard.expired(), doing="posting to", limit=timeout
                ) from exc
        return PostResult(response.status, answer, time.monotonic() - start)

    def close(self) -> None:
        """Close every pooled connection; the Fetcher cannot be used afterwards."""
        self._pools.close()
        self._watchdog.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- one attempt ----------------------------------------------------------------------

    def _fetch_once(
        self, url: str, deadline: float, first: ParsedTarget | None = None
    ) -> tuple[bytes, str | None, str]:
        current = url
        for hop in range(self.limits.max_redirects + 1):
            # the first hop's URL was checked by the caller (when given): no second parse
            target = first if hop == 0 and first is not None else check_url(current, self.policy)
            addresses = resolve_checked(target, self.policy, self._resolver)
            headers = {
                "Host": target.authority,
                "User-Agent": self.user_agent,
                "Accept": "image/*,*/*;q=0.8",
                "Accept-Encoding": "identity",  # images are compressed; no decompression bombs
            }
            with self._watchdog.guard(deadline) as guard:
                try:
                    response = self._send("GET", target, addresses, deadline, None, headers)
                    try:
                        location, data = self._answer(response, target, guard)
                    except BaseException:
                        self._abandon(response, guard)
                        raise
                except (HTTPError, OSError) as exc:
                    raise transport_failure(
                        exc,
                        target.host,
                        expired=guard.expired(),
                        doing="fetching from",
                        limit=self.limits.total_timeout,
                    ) from exc
            if location is None:
                return data, response.headers.get("Content-Type"), target.url
            try:
                current = urljoin(target.url, location)
            except ValueError:  # e.g. "http://[::1": the server's fault, not the image's
                raise ImageFailure(
                    "upstream", f"{target.host} redirected to a malformed Location"
                ) from None
        raise ImageFailure(
            "upstream",
            f"too many redirects (more than {self.limits.max_redirects}) from {target.host}",
        )

    def _answer(
        self, response: BaseHTTPResponse, target: ParsedTarget, guard: Guard
    ) -> tuple[str | None, bytes]:
        """(redirect location, b"") for a redirect, (None, body) for a 200; raise otherwise."""
        status = response.status
        if status in _REDIRECTS:
            location = response.headers.get("Location")
            self._discard(response, guard)
            if not location:
                raise ImageFailure("upstream", f"HTTP {status} from {target.host} with no Location")
            return location, b""
        if status not in (200, 203):
            retry_after = response.headers.get("Retry-After")
            self._discard(response, guard)
            raise status_failure(status, target.host, retry_after)
        data = self._read_capped(response, target)
        self._release(response, guard)
        return None, data

    def _send(
        self,
        method: str,
        target: ParsedTarget,
        addresses: list[IPAddress],
        deadline: float,
        body: bytes | None,
        headers: dict[str, str],
    ) -> BaseHTTPResponse:
        """Send to the first checked address that accepts a connection."""
        for index, ip in enumerate(addresses):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectTimeoutError("deadline passed before connecting")
            timeout = Timeout(connect=min(self.limits.connect_timeout, remaining), read=remaining)
            try:
                return self._pools.get(target, ip).urlopen(
                    method,
                    target.path,
                    body=body,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=False,
                    timeout=timeout,
                )
            except NewConnectionError:
                if index + 1 == len(addresses):
                    raise
                log.debug("connect to an address of %s failed, trying the next", target.host)
        raise AssertionError("unreachable: addresses is never empty")

    # --- bodies ---------------------------------------------------------------------------

    def _read_capped(self, response: BaseHTTPResponse, target: ParsedTarget) -> bytes:
        """The body, refusing more than max_bytes whatever Content-Length claims."""
        cap = self.limits.max_bytes
        headers = response.headers
        declared = headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise ImageFailure(
                "too_large", f"{target.host} announced {declared} bytes, over the {cap} byte limit"
            )
        plain = headers.get("Content-Encoding", "identity").lower() == "identity"
        if declared.isdigit() and plain and "Transfer-Encoding" not in headers:
            # HTTP framing stops the read at Content-Length (<= cap) and nothing is
            # decompressed, so one read is safe, and cheaper than a chunk loop.
            return response.read()
        body = bytearray()
        while True:
            chunk = response.read(min(_CHUNK, cap + 1 - len(body)))
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > cap:
                raise ImageFailure("too_large", f"body from {target.host} exceeds {cap} bytes")

    def _discard(self, response: BaseHTTPResponse, guard: Guard) -> None:
        """Read and drop a small body so the connection can be reused; close it otherwise."""
        read = 0
        while read <= _DISCARD_CAP:
            chunk = response.read(_CHUNK)
            if not chunk:
                self._release(response, guard)
                return
            read += len(chunk)
        self._abandon(response, guard)

    def _release(self, response: BaseHTTPResponse, guard: Guard) -> None:
        self._watchdog.unwatch(guard, response.connection)  # type: ignore[arg-type]
        response.release_conn()

    def _abandon(self, response: BaseHTTPResponse, guard: Guard) -> None:
        """Close a response whose body was not fully read; its connection cannot be reused."""
        if response.connection is None:
            return  # already released
        self._watchdog.unwatch(guard, response.connection)  # type: ignore[arg-type]
        response.close()
        response.release_conn()

    # --- failures ---------------------------------------------------------------------------

    def _backoff(self, attempt: int, failure: ImageFailure) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now."""
        if not failure.retryable or attempt >= self.limits.attempts:
            return None
        delay = self.limits.backoff_base * 2 ** (attempt - 1)
        retry_after = getattr(failure, "retry_after", None)
        if retry_after is not None:
            if retry_after > _MAX_RETRY_AFTER:
                return None
            delay = max(delay, retry_after)
        return delay


def _cooling(origin: str, state: HostState) -> BackendFault:
    left = state.left()
    return BackendFault(
        "fetch",
        f"{origin} is cooling down for {left:.0f} s more ({state.reason})",
        delay=left,
        code="upstream",
    )
