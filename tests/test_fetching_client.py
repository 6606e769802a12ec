"""The Fetcher against a real HTTP server on loopback (`support.imageserver.ImageServer`).

Every connection these tests make is checked to go to loopback (`loopback_only`),
so even a broken address check cannot send traffic anywhere else. Refusals are
proven by the server's request log: a blocked URL never reaches it.
"""

from __future__ import annotations

import datetime as dt
import io
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imgbatch.errors import ImageFailure
from imgbatch.fetching import AddressPolicy, Fetcher, FetchLimits, check_webhook_url
from support.imageserver import ImageServer

OPEN = AddressPolicy(allow_private=True)
FAST = FetchLimits(connect_timeout=1.0, total_timeout=5.0, backoff_base=0.01, max_bytes=1 << 20)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any test that tries to connect outside 127.0.0.0/8 and ::1; list the targets."""
    real_connect = socket.socket.connect
    targets: list[str] = []

    def guarded(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple):
            host = str(address[0]).split("%")[0]
            if not ip_address(host).is_loopback:
                raise AssertionError(f"test tried to connect to non-loopback {host}")
            targets.append(host)
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return targets


def test_the_loopback_guard_sees_the_fetchers_connections(
    server: ImageServer, fetcher: Fetcher, loopback_only: list[str]
) -> None:
    fetcher.fetch(server.url("a.jpg"))
    assert loopback_only == ["127.0.0.1"]


@pytest.fixture(scope="module")
def fetch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("images")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "JPEG")
    (directory / "a.jpg").write_bytes(buffer.getvalue())
    (directory / "exact.bin").write_bytes(b"\1" * (1 << 20))
    return directory


@pytest.fixture
def server(fetch_dir: Path) -> Iterator[ImageServer]:
    with ImageServer(fetch_dir) as srv:
        yield srv


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    with Fetcher(OPEN, FAST) as f:
        yield f


def static_resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    """A resolver answering from `table`; unknown names fail like getaddrinfo does."""

    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(table[host])

    return resolve


def failure_of(call: Callable[[], object]) -> ImageFailure:
    with pytest.raises(ImageFailure) as info:
        call()
    return info.value


# --- success and reuse ---------------------------------------------------------------


def test_fetch_success(server: ImageServer, fetcher: Fetcher, fetch_dir: Path) -> None:
    result = fetcher.fetch(server.url("a.jpg"))
    assert result.data == (fetch_dir / "a.jpg").read_bytes()
    assert result.content_type == "image/jpeg"
    assert result.final_url == server.url("a.jpg")
    assert result.attempts == 1
    sent = server.received[0]
    assert sent.headers["Host"] == f"127.0.0.1:{server.port}"
    assert sent.headers["User-Agent"].startswith("imgbatch/")


def test_keep_alive_reuses_one_connection(server: ImageServer, fetcher: Fetcher) -> None:
    for _ in range(5):
        fetcher.fetch(server.url("a.jpg"))
    fetcher.fetch(server.url("text"))
    assert len(server.requests) == 6
    assert server.connections == 1


def test_error_bodies_do_not_break_reuse(server: ImageServer, fetcher: Fetcher) -> None:
    failure_of(lambda: fetcher.fetch(server.url("missing.jpg")))
    fetcher.fetch(server.url("redirect?to=/a.jpg"))
    fetcher.fetch(server.url("a.jpg"))
    assert server.connections == 1


def test_threads_share_a_fetcher(server: ImageServer, fetcher: Fetcher) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                assert fetcher.fetch(server.url("a.jpg")).data
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(server.requests) == 80
    assert server.connections <= 8 * 2


def test_ipv6_loopback(fetch_dir: Path, fetcher: Fetcher) -> None:
    assert socket.has_ipv6, "this machine kind has IPv6 loopback; the test must run"
    srv = ImageServer(fetch_dir, host="::1").start()
    with srv:
        result = fetcher.fetch(srv.url("a.jpg"))
        assert result.final_url == f"http://[::1]:{srv.port}/a.jpg"
        assert srv.received[0].headers["Host"] == f"[::1]:{srv.port}"


def test_falls_back_to_the_next_checked_address(server: ImageServer) -> None:
    # Nothing listens on 127.0.0.2:port, so the second (also checked) address is used.
    resolver = static_resolver({"images.test": ["127.0.0.2", "127.0.0.1"]})
    with Fetcher(OPEN, FAST, resolver=resolver) as fetcher:
        result = fetcher.fetch(f"http://images.test:{server.port}/a.jpg")
    assert result.attempts == 1
    assert server.received[0].headers["Host"] == f"images.test:{server.port}"


# --- statuses and retries ------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
def test_not_found_is_not_retried(server: ImageServer, fetcher: Fetcher, status: int) -> None:
    failure = failure_of(lambda: fetcher.fetch(server.url(f"status/{status}")))
    assert failure.code == "not_found"
    assert failure.message == f"HTTP {status} from 127.0.0.1"
    assert not failure.retryable
    assert server.requests == [f"/status/{status}"]


@pytest.mark.parametrize("status", [400, 401, 403, 418, 300, 304, 204, 206])
def test_other_statuses_are_permanent_upstream(
    server: ImageServer, fetcher: Fetcher, status: int
) -> None:
    failure = failure_of(lambda: fetcher.fetch(server.url(f"status/{status}")))
    assert failure.code == "upstream"
    assert f"HTTP {status}" in failure.message
    assert len(server.requests) == 1


def test_flaky_then_success(server: ImageServer, fetcher: Fetcher) -> None:
    result = fetcher.fetch(server.url("flaky/a.jpg?fail=2"))
    assert result.attempts == 3
    assert result.content_type == "image/jpeg"
    assert len(server.requests) == 3


def test_server_error_forever_gives_up_after_attempts(
    server: ImageServer, fetcher: Fetcher
) -> None:
    failure = failure_of(lambda: fetcher.fetch(server.url("status/500")))
    assert failure.code == "upstream"
    assert failure.message == "HTTP 500 from 127.0.0.1 (after 3 attempts)"
    assert failure.retryable
    assert server.requests == ["/status/500"] * 3


def test_backoff_is_exponential(server: ImageServer) -> None:
    limits = FetchLimits(total_timeout=5, backoff_base=0.1, attempts=3)
    with Fetcher(OPEN, limits) as fetcher:
        start = time.monotonic()
        failure_of(lambda: fetcher.fetch(server.url("status/503")))
        elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 1.5  # 0.1 + 0.2


def test_retry_after_is_honoured(server: ImageServer, fetcher: Fetcher) -> None:
    start = time.monotonic()
    result = fetcher.fetch(server.url("flaky/a.jpg?fail=1&status=429&retry_after=1"))
    assert result.attempts == 2
    assert time.monotonic() - start >= 1.0


def test_retry_after_as_http_date(server: ImageServer, fetcher: Fetcher) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    date = when.strftime("%a, %d %b %Y %H:%M:%S GMT").replace(" ", "%20").replace(",", "%2C")
    failure = failure_of(lambda: fetcher.fetch(server.url(f"status/503?retry_after={date}")))
    assert failure.retryable
    assert len(server.requests) == 1  # too long to wait here: left to the caller


def test_long_retry_after_gives_up_at_once(server: ImageServer, fetcher: Fetcher) -> None:
    failure = failure_of(lambda: fetcher.fetch(server.url("status/429?retry_after=3600")))
    assert failure.code == "upstream"
    assert failure.retryable
    assert server.requests == ["/status/429?retry_after=3600"]


def test_connection_refused_is_upstream_after_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the fetch
    with Fetcher(OPEN, FAST) as fetcher:
        failure = failure_of(lambda: fetcher.fetch(f"http://127.0.0.1:{port}/a.jpg"))
    assert failure.code == "upstream"
    assert failure.message.startswith("cannot connect to 127.0.0.1")
    assert "after 3 attempts" in failure.message


# --- time limits ----------------------------------------------------------------------------


def test_slow_server_times_out(server: ImageServer) -> None:
    limits = FetchLimits(total_timeout=0.5, backoff_base=0.01)
    with Fetcher(OPEN, limits) as fetcher:
        start = time.monotonic()
        failure = failure_of(lambda: fetcher.fetch(server.url("slow?seconds=5")))
        elapsed = time.monotonic() - start
    assert failure.code == "timeout"
    assert failure.retryable
    assert elapsed < 1.5


def test_dripping_body_cannot_outlive_the_deadline(server: ImageServer) -> None:
    # One byte every 0.1 s keeps each recv() under any socket timeout: only the
    # total deadline stops it.
    limits = FetchLimits(total_timeout=0.8, backoff_base=0.01)
    with Fetcher(OPEN, limits) as fetcher:
        start = time.monotonic()
        failure = failure_of(lambda: fetcher.fetch(server.url("drip?seconds=10&chunks=100")))
        elapsed = time.monotonic() - start
    assert failure.code == "timeout"
    assert elapsed < 2.0


def test_deadline_covers_retries(server: ImageServer) -> None:
    limits = FetchLimits(total_timeout=1.0, backoff_base=0.4, attempts=10)
    with Fetcher(OPEN, limits) as fetcher:
        start = time.monotonic()
        failure_of(lambda: fetcher.fetch(server.url("status/503")))
        assert time.monotonic() - start < 1.5
    assert 2 <= len(server.requests) <= 3


# --- redirects -------------------------------------------------------------------------------


def test_redirect_chain(server: ImageServer, fetcher: Fetcher) -> None:
    hop2 = server.url("redirect?to=/a.jpg&status=307")
    hop1 = server.url(f"redirect?to={hop2.replace('&', '%26')}&status=301")
    result = fetcher.fetch(hop1)
    assert result.final_url == server.url("a.jpg")
    assert result.attempts == 1
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_statuses(server: ImageServer, fetcher: Fetcher, status: int) -> None:
    result = fetcher.fetch(server.url(f"redirect?to=a.jpg&status={status}"))
    assert result.final_url == server.url("a.jpg")


def redirect_chain(server: ImageServer, hops: int) -> str:
    url = server.url("a.jpg")
    for _ in range(hops):
        url = server.url("redirect?to=" + url.replace("%", "%25").replace("&", "%26"))
    return url


def test_max_redirects_is_allowed(server: ImageServer, fetcher: Fetcher) -> None:
    assert fetcher.fetch(redirect_chain(server, 5)).final_url == server.url("a.jpg")


def test_too_many_redirects(server: ImageServer, fetcher: Fetcher) -> None:
    failure = failure_of(lambda: fetcher.fetch(redirect_chain(server, 6)))
    assert failure.code == "upstream"
    assert "too many redirects" in failure.message
    assert not failure.retryable
    assert len(server.requests) == 6
    assert "/a.jpg" not in server.requests


def test_redirect_loop(server: ImageServer, fetcher: Fetcher) -> None:
    loop = server.url("status/302?location=%23again")  # Location "#again": the same URL
    failure = failure_of(lambda: fetcher.fetch(loop))
    assert failure.code == "upstream"
    assert "too many redirects" in failure.message
    assert len(server.requests) == FAST.max_redirects + 1


def test_redirect_without_location(server: ImageServer, fetcher: Fetcher) -> None:
    failure = failure_of(lambda: fetcher.fetch(server.url("status/302")))
    assert failure.code == "upstream"
    assert "no Location" in failure.message


@pytest.mark.parametrize("location", ["http://[::1", "http://[127.0.0.1]/a.jpg", "//[::1/x"])
def test_redirect_to_a_malformed_location_is_upstream(
    server: ImageServer, fetcher: Fetcher, location: str
) -> None:
    quoted = location.replace("%", "%25").replace("[", "%5B").replace("]", "%5D")
    failure = failure_of(lambda: fetcher.fetch(server.url(f"redirect?to={quoted}")))
    assert failure.code == "upstream"
    assert "malformed Location" in failure.message


def test_redirect_to_other_scheme_is_bad_url(server: ImageServer, fetcher: Fetcher) -> None:
    failure = failure_of(lambda: fetcher.fetch(server.url("redirect?to=file:///etc/passwd")))
    assert failure.code == "bad_url"


# --- byte cap ---------------------------------------------------------------------------------


def test_exactly_max_bytes_is_fine(server: ImageServer, fetcher: Fetcher) -> None:
    assert len(fetcher.fetch(server.url("exact.bin")).data) == 1 << 20
    assert len(fetcher.fetch(server.url(f"big?bytes={1 << 20}&length=none")).data) == 1 << 20


def test_announced_too_large(server: ImageServer, fetcher: Fetcher) -> None:
    failure = failure_of(lambda: fetcher.fetch(server.url(f"big?bytes={(1 << 20) + 1}")))
    assert failure.code == "too_large"
    assert not failure.retryable


def test_streamed_too_large_without_content_length(server: ImageServer, fetcher: Fetcher) -> None:
    failure = failure_of(lambda: fetcher.fetch(server.url("big?bytes=50000000&length=none")))
    assert failure.code == "too_large"
    failure = failure_of(
        lambda: fetcher.fetch(server.url(f"big?bytes={(1 << 20) + 1}&length=none"))
    )
    assert failure.code == "too_large"


def test_lying_small_content_length_cannot_exceed_the_cap(
    server: ImageServer, fetcher: Fetcher
) -> None:
    # HTTP framing wins: only the announced bytes are read, never the flood behind them.
    result = fetcher.fetch(server.url("big?bytes=50000000&length=1000"))
    assert len(result.data) == 1000


def test_lying_large_content_length_is_refused(server: ImageServer, fetcher: Fetcher) -> None:
    failure = failure_of(lambda: fetcher.fetch(server.url("big?bytes=10&length=999999999")))
    assert failure.code == "too_large"


def test_truncated_body_is_an_upstream_error(server: ImageServer, fetcher: Fetcher) -> None:
    failure = failure_of(lambda: fetcher.fetch(server.url("big?bytes=10&length=1000")))
    assert failure.code == "upstream"
    assert failure.retryable


# --- webhooks: post ----------------------------------------------------------------------------


def test_post_delivers_and_returns_status(server: ImageServer, fetcher: Fetcher) -> None:
    body = b'{"type": "batch.completed"}'
    result = fetcher.post(
        server.url("hooks/in"), body, {"Content-Type": "application/json", "Host": "evil"}, 2.0
    )
    assert result.status == 200
    assert result.headers["content-type"].startswith("text/plain")
    assert result.elapsed < 2.0
    sent = server.received[0]
    assert (sent.method, sent.path, sent.body) == ("POST", "/hooks/in", body)
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Host"] == f"127.0.0.1:{server.port}"


def test_post_does_not_follow_redirects(server: ImageServer, fetcher: Fetcher) -> None:
    target = server.url("hooks/other")
    result = fetcher.post(server.url(f"redirect?to={target}&status=307"), b"{}", {}, 2.0)
    assert result.status == 307
    assert result.headers["location"] == target
    assert server.requests == [f"/redirect?to={target}&status=307"]


@pytest.mark.parametrize("status", [204, 410, 500])
def test_post_returns_statuses_without_retrying(
    server: ImageServer, fetcher: Fetcher, status: int
) -> None:
    assert fetcher.post(server.url(f"status/{status}"), b"{}", {}, 2.0).status == status
    assert len(server.requests) == 1


def test_post_discards_large_answers(server: ImageServer, fetcher: Fetcher) -> None:
    assert fetcher.post(server.url("big?bytes=50000000"), b"{}", {}, 2.0).status == 200
    assert fetcher.post(server.url("status/200"), b"{}", {}, 2.0).status == 200


def test_post_timeout(server: ImageServer, fetcher: Fetcher) -> None:
    start = time.monotonic()
    failure = failure_of(lambda: fetcher.post(server.url("slow?seconds=5"), b"{}", {}, 0.3))
    assert failure.code == "timeout"
    assert time.monotonic() - start < 1.0
    assert len(server.requests) == 1


def test_post_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Fetcher(OPEN, FAST) as fetcher:
        failure = failure_of(lambda: fetcher.post(f"http://127.0.0.1:{port}/", b"", {}, 1.0))
    assert failure.code == "upstream"


# --- refusals with private addresses disallowed -----------------------------------------------


def strict_for(server: ImageServer, *allowed_hosts: str) -> AddressPolicy:
    """Private addresses refused; the server's port allowed so only the address decides."""
    return AddressPolicy(allowed_hosts=allowed_hosts, allowed_ports=(80, 443, server.port))


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "2130706433", "0x7f.1", "127.1", "0177.0.0.1", "127.0.1"]
)
def test_loopback_in_any_spelling_is_refused(server: ImageServer, host: str) -> None:
    with Fetcher(strict_for(server), FAST) as fetcher:
        failure = failure_of(lambda: fetcher.fetch(f"http://{host}:{server.port}/a.jpg"))
        assert failure.code == "blocked_address"
        assert "loopback" in failure.message
        failure = failure_of(lambda: fetcher.post(f"http://{host}:{server.port}/h", b"", {}, 1))
        assert failure.code == "blocked_address"
    assert server.requests == []
    assert server.connections == 0


def test_ipv6_loopback_is_refused(fetch_dir: Path) -> None:
    srv = ImageServer(fetch_dir, host="::1").start()
    with srv, Fetcher(strict_for(srv), FAST) as fetcher:
        for host in ("[::1]", "[0:0:0:0:0:0:0:1]"):
            failure = failure_of(partial(fetcher.fetch, f"http://{host}:{srv.port}/a.jpg"))
            assert failure.code == "blocked_address"
        assert srv.requests == []
        assert srv.connections == 0


def test_default_port_policy_refuses_before_resolving(server: ImageServer) -> None:
    calls: list[str] = []
    resolver = static_resolver({"images.example.com": ["127.0.0.1"]}, calls)
    with Fetcher(AddressPolicy(), FAST, resolver=resolver) as fetcher:
        failure = failure_of(lambda: fetcher.fetch(f"http://images.example.com:{server.port}/"))
    assert failure.code == "blocked_address"
    assert f"port {server.port}" in failure.message
    assert calls == []
    assert server.requests == []


def test_allowed_host_may_reach_loopback(server: ImageServer) -> None:
    resolver = static_resolver({"images.test": ["127.0.0.1"]})
    with Fetcher(AddressPolicy(allowed_hosts=("images.test",)), FAST, resolver=resolver) as f:
        result = f.fetch(f"http://images.test:{server.port}/a.jpg")
    assert result.final_url == f"http://images.test:{server.port}/a.jpg"
    assert server.received[0].headers["Host"] == f"images.test:{server.port}"


def test_redirect_from_allowed_host_to_loopback_is_refused(server: ImageServer) -> None:
    calls: list[str] = []
    resolver = static_resolver({"images.test": ["127.0.0.1"]}, calls)
    blocked = server.url("a.jpg")  # http://127.0.0.1:port/a.jpg, not an allowed host
    with Fetcher(strict_for(server, "images.test"), FAST, resolver=resolver) as fetcher:
        failure = failure_of(
            lambda: fetcher.fetch(f"http://images.test:{server.port}/redirect?to={blocked}")
        )
    assert failure.code == "blocked_address"
    assert "127.0.0.1" in failure.message
    assert server.requests == [f"/redirect?to={blocked}"]
    assert calls == ["images.test"]


def test_redirect_to_a_name_that_resolves_to_loopback_is_refused(server: ImageServer) -> None:
    calls: list[str] = []
    resolver = static_resolver(
        {"images.test": ["127.0.0.1"], "cdn.example.com": ["127.0.0.1"]}, calls
    )
    hop = f"http://cdn.example.com:{server.port}/a.jpg"
    with Fetcher(strict_for(server, "images.test"), FAST, resolver=resolver) as fetcher:
        failure = failure_of(
            lambda: fetcher.fetch(f"http://images.test:{server.port}/redirect?to={hop}")
        )
    assert failure.code == "blocked_address"
    assert calls == ["images.test", "cdn.example.com"]  # once per hop
    assert server.requests == [f"/redirect?to={hop}"]


def test_dns_rebinding_to_loopback_is_refused(server: ImageServer) -> None:
    resolver = static_resolver({"images.example.com": ["127.0.0.1"]})
    with Fetcher(strict_for(server), FAST, resolver=resolver) as fetcher:
        failure = failure_of(
            lambda: fetcher.fetch(f"http://images.example.com:{server.port}/a.jpg")
        )
    assert failure.code == "blocked_address"
    assert failure.message == "images.example.com (127.0.0.1) is not a public address (loopback)"
    assert server.requests == []


@pytest.mark.parametrize(
    "answers",
    [
        ["93.184.216.34", "127.0.0.1"],
        ["2606:4700::1111", "::ffff:127.0.0.1"],
        ["93.184.216.34", "169.254.169.254"],
        ["93.184.216.34", "64:ff9b::7f00:1"],
    ],
)
def test_one_forbidden_address_refuses_the_name(server: ImageServer, answers: list[str]) -> None:
    # The public-looking answers are never contacted: every answer is checked
    # before any connection (and `loopback_only` would fail the test otherwise).
    resolver = static_resolver({"images.example.com": answers})
    with Fetcher(strict_for(server), FAST, resolver=resolver) as fetcher:
        failure = failure_of(lambda: fetcher.fetch(f"http://images.example.com:{server.port}/"))
    assert failure.code == "blocked_address"
    assert server.requests == []


def test_post_refuses_rebinding_at_send_time(server: ImageServer) -> None:
    resolver = static_resolver({"hooks.example.com": ["127.0.0.1"]})
    with Fetcher(strict_for(server), FAST, resolver=resolver) as fetcher:
        failure = failure_of(
            lambda: fetcher.post(f"http://hooks.example.com:{server.port}/h", b"{}", {}, 1.0)
        )
    assert failure.code == "blocked_address"
    assert server.requests == []


def test_unresolvable_name(server: ImageServer) -> None:
    with Fetcher(OPEN, FAST, resolver=static_resolver({})) as fetcher:
        failure = failure_of(lambda: fetcher.fetch("http://nowhere.test/a.jpg"))
    assert failure.code == "upstream"
    assert failure.message.startswith("cannot resolve nowhere.test")


# --- check_webhook_url ----------------------------------------------------------------------


def test_check_webhook_url() -> None:
    resolver = static_resolver({"hooks.example.com": ["93.184.216.34"], "evil.test": ["10.0.0.5"]})
    check_webhook_url("https://hooks.example.com/in", AddressPolicy(), resolver)
    for url, code in [
        ("ftp://hooks.example.com/", "bad_url"),
        ("https://user:secret@hooks.example.com/", "bad_url"),
        ("https://unknown.test/", "bad_url"),
        ("https://evil.test/", "blocked_address"),
        ("http://127.0.0.1/", "blocked_address"),
        ("http://0x7f.1/", "blocked_address"),
        ("https://hooks.example.com:6379/", "blocked_address"),
    ]:
        failure = failure_of(partial(check_webhook_url, url, AddressPolicy(), resolver))
        assert failure.code == code, url
        assert "secret" not in failure.message
    check_webhook_url("http://127.0.0.1:9/", AddressPolicy(allow_private=True), resolver)


def test_check_webhook_url_default_resolver_refuses_localhost() -> None:
    failure = failure_of(lambda: check_webhook_url("http://localhost/", AddressPolicy()))
    assert failure.code == "blocked_address"


# --- https: connect by IP, verify the original name ---------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a certificate for `images.test` signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("imgbatch test CA"))
        .issuer_name(name("imgbatch test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("images.test"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("images.test")]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = {
        "ca": directory / "ca.pem",
        "cert": directory / "cert.pem",
        "key": directory / "key.pem",
    }
    files["ca"].write_bytes(ca_cert.public_bytes(pem))
    files["cert"].write_bytes(cert.public_bytes(pem))
    files["key"].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


@pytest.fixture
def tls_server(fetch_dir: Path, tls_files: dict[str, Path]) -> Iterator[tuple[ImageServer, list]]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    server_names: list[str | None] = []
    context.sni_callback = lambda sock, server_name, ctx: server_names.append(server_name)
    with ImageServer(fetch_dir, ssl_context=context) as srv:
        yield srv, server_names


def test_https_pins_the_ip_and_verifies_the_original_name(
    tls_server: tuple[ImageServer, list], tls_files: dict[str, Path]
) -> None:
    srv, server_names = tls_server
    resolver = static_resolver({"images.test": ["127.0.0.1"]})
    with Fetcher(OPEN, FAST, resolver=resolver, ca_certs=str(tls_files["ca"])) as fetcher:
        for _ in range(3):
            result = fetcher.fetch(f"https://images.test:{srv.port}/a.jpg")
    assert result.content_type == "image/jpeg"
    assert server_names == ["images.test"]  # SNI, and one TLS connection reused
    assert srv.received[0].headers["Host"] == f"images.test:{srv.port}"


def test_https_certificate_for_another_name_is_refused(
    tls_server: tuple[ImageServer, list], tls_files: dict[str, Path]
) -> None:
    srv, _ = tls_server
    resolver = static_resolver({"other.test": ["127.0.0.1"]})
    with Fetcher(OPEN, FAST, resolver=resolver, ca_certs=str(tls_files["ca"])) as fetcher:
        failure = failure_of(lambda: fetcher.fetch(f"https://other.test:{srv.port}/a.jpg"))
        assert failure.code == "upstream"
        assert failure.message.startswith("TLS error fetching from other.test")
        assert not failure.retryable
        # Connecting by IP literal verifies against the IP, which the cert lacks.
        failure = failure_of(lambda: fetcher.fetch(srv.url("a.jpg")))
        assert failure.code == "upstream"
    assert srv.requests == []


def test_https_untrusted_ca_is_refused(tls_server: tuple[ImageServer, list]) -> None:
    srv, _ = tls_server
    resolver = static_resolver({"images.test": ["127.0.0.1"]})
    with Fetcher(OPEN, FAST, resolver=resolver) as fetcher:
        failure = failure_of(lambda: fetcher.fetch(f"https://images.test:{srv.port}/a.jpg"))
    assert failure.code == "upstream"
    assert srv.requests == []


def test_closed_fetcher_refuses_work(server: ImageServer) -> None:
    fetcher = Fetcher(OPEN, FAST)
    fetcher.close()
    with pytest.raises(RuntimeError):
        fetcher.fetch(server.url("a.jpg"))
