"""Slow and stalled clients over raw sockets: they hold their own connection, nothing else.

Four connections that sent upload headers and one line of body, then nothing, used to
take every upload slot for as long as they stayed open; half-sent request heads were
held forever. Now a body is received before its upload takes a parsing slot, within
`IMGBATCH_UPLOAD_TIMEOUT` and at `IMGBATCH_UPLOAD_MIN_RATE` (else 408), and a request
head must be complete within `IMGBATCH_REQUEST_HEAD_TIMEOUT`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from imgbatch.api.bodies import BodyLimits, next_wait
from support.service import Service, http, multipart, products_csv

HEAD_TIMEOUT = 1.5
UPLOAD_TIMEOUT = 4.0
CSV = products_csv([("Shoe", ["http://127.0.0.1:9/shoe.jpg"])])


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, **env: str) -> Service:
    service = Service(
        tmp_path_factory.mktemp(name) / "data",
        {
            "IMGBATCH_UPLOAD_RATE_LIMIT": "0",
            "IMGBATCH_REQUEST_HEAD_TIMEOUT": str(HEAD_TIMEOUT),
            **env,
        },
    )
    service.start(workers=0)
    return service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Short upload deadline, no minimum rate: the deadline alone is tested."""
    svc = _start(
        tmp_path_factory,
        "deadline",
        IMGBATCH_UPLOAD_TIMEOUT=str(UPLOAD_TIMEOUT),
        IMGBATCH_UPLOAD_MIN_RATE="0",
    )
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def rated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A long deadline and a minimum rate of 20 kB/s (checked from 5 s on)."""
    svc = _start(
        tmp_path_factory, "rate", IMGBATCH_UPLOAD_TIMEOUT="60", IMGBATCH_UPLOAD_MIN_RATE="20000"
    )
    try:
        yield svc
    finally:
        svc.stop()


def _connect(service: Service) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=30)


def _upload_head(length: int, content_type: str = "text/csv") -> bytes:
    return (
        f"POST /api/upload HTTP/1.1\r\nHost: imgbatch\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def _one_response(sock: socket.socket) -> bytes:
    """Exactly one response (head and Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _status_and_json(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


# --- upload bodies -------------------------------------------------------------------------


def test_four_stalled_uploads_do_not_block_anyone_else(service: Service) -> None:
    stalled = []
    for _ in range(4):  # as many as IMGBATCH_MAX_CONCURRENT_UPLOADS
        sock = _connect(service)
        sock.sendall(_upload_head(1_000_000) + b"S. No.,Product Name,Input Image Urls\r\n")
        stalled.append(sock)
    time.sleep(0.5)
    started = time.monotonic()
    body, content_type = multipart(CSV)
    status, _, raw = http(
        "POST", service.url + "/api/upload", body, {"Content-Type": content_type}, timeout=10
    )
    assert status == 202, raw
    assert time.monotonic() - started < 2.0
    assert http("GET", service.url + "/healthz")[0] == 200
    for sock in stalled:
        with sock:
            status, answer = _status_and_json(_answer(sock))
            assert status == 408
            assert answer["error"]["code"] == "upload_timeout"  # type: ignore[index]


def test_a_stalled_body_is_dropped_with_408_at_the_deadline(service: Service) -> None:
    with _connect(service) as sock:
        started = time.monotonic()
        sock.sendall(_upload_head(len(CSV) + 100) + CSV)
        raw = _answer(sock)
        elapsed = time.monotonic() - started
    status, answer = _status_and_json(raw)
    assert status == 408 and b"connection: close" in raw.lower()
    error = answer["error"]
    assert error["code"] == "upload_timeout"  # type: ignore[index]
    assert f"not complete within {UPLOAD_TIMEOUT:g} s" in error["message"]  # type: ignore[index]
    assert UPLOAD_TIMEOUT - 0.5 < elapsed < UPLOAD_TIMEOUT + 2


def test_a_body_that_trickles_below_the_minimum_rate_is_dropped(rated: Service) -> None:
    with _connect(rated) as sock:
        started = time.monotonic()
        sock.sendall(_upload_head(1_000_000))
        sent = 0

        def trickle() -> None:  # 2 kB/s, a tenth of the minimum rate
            nonlocal sent
            try:
                while time.monotonic() - started < 20:
                    sock.sendall(b"x" * 500)
                    sent += 500
                    time.sleep(0.25)
            except OSError:
                pass

        threading.Thread(target=trickle, daemon=True).start()
        raw = _answer(sock)
        elapsed = time.monotonic() - started
    status, answer = _status_and_json(raw)
    assert status == 408
    assert "slower than 20000 bytes per second" in answer["error"]["message"]  # type: ignore[index]
    assert 4.5 < elapsed < 8  # the first 5 s are a grace period
    assert 0 < sent < 20_000


def test_a_body_above_the_minimum_rate_is_accepted_however_long_it_takes(
    rated: Service,
) -> None:
    rows = [(f"Product {i}", [f"http://127.0.0.1:9/{i}/{'p' * 60}.jpg"]) for i in range(1500)]
    body = products_csv(rows)  # ~150 kB, sent at ~25 kB/s: 6 s, past the grace period
    assert len(body) > 125_000
    with _connect(rated) as sock:
        started = time.monotonic()
        sock.sendall(_upload_head(len(body)))
        for i in range(0, len(body), 5000):
            sock.sendall(body[i : i + 5000])
            time.sleep(0.2)
        raw = _one_response(sock)
        elapsed = time.monotonic() - started
    assert raw.startswith(b"HTTP/1.1 202"), raw[:300]
    assert elapsed > 5.5


# --- request heads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /api/upload HTTP/1.1\r\nHost: imgbatch\r\n", b"GET /healthz HTTP/1.1\r\nX: "],
    ids=["nothing", "half a head", "a header cut short"],
)
def test_a_request_head_that_does_not_arrive_is_answered_408_and_closed(
    service: Service, sent: bytes
) -> None:
    with _connect(service) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        raw = _answer(sock)
        elapsed = time.monotonic() - started
    assert raw.startswith(b"HTTP/1.1 408 "), raw
    assert HEAD_TIMEOUT - 0.3 < elapsed < HEAD_TIMEOUT + 1.5


def test_a_head_sent_one_byte_at_a_time_is_cut_off_at_the_deadline(service: Service) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: imgbatch\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with _connect(service) as sock:
        started = time.monotonic()
        try:
            for byte in head:  # 10 bytes a second: the head would take 25 s
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = _answer(sock)
        elapsed = time.monotonic() - started
    assert raw.startswith(b"HTTP/1.1 408 "), raw
    assert elapsed < HEAD_TIMEOUT + 1.5


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_head(
    service: Service,
) -> None:
    with _connect(service) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: imgbatch\r\n\r\n")
        first = _one_response(sock)
        assert first.startswith(b"HTTP/1.1 200"), first
        time.sleep(1.0)  # idle, under uvicorn's keep-alive timeout (5 s)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        started = time.monotonic()
        raw = _answer(sock)
    assert raw.startswith(b"HTTP/1.1 408 "), raw
    assert time.monotonic() - started < HEAD_TIMEOUT + 1.5


def test_prompt_clients_are_unaffected(service: Service) -> None:
    with _connect(service) as sock:
        for _ in range(3):  # keep-alive: three requests, one connection
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: imgbatch\r\n\r\n")
            assert _one_response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(HEAD_TIMEOUT / 2)
        body, content_type = multipart(CSV)
        head = _upload_head(len(body), content_type)
        sock.sendall(head + body)
        assert _one_response(sock).startswith(b"HTTP/1.1 202")


# --- the rule, pure ------------------------------------------------------------------------


def test_next_wait_is_the_earlier_of_the_deadline_and_falling_behind_the_rate() -> None:
    limits = BodyLimits(cap=10**9, timeout=300, min_rate=1000, grace=5)
    assert next_wait(0, 0, limits) == 5  # nothing yet: the grace period
    assert next_wait(2, 3000, limits) == 3  # 3000 bytes cover 3 s: the grace is longer
    assert next_wait(2, 10_000, limits) == 8  # ... 10 kB until t = 10 s
    assert next_wait(12, 10_000, limits) == -2  # behind: drop now
    assert next_wait(299, 10**8, limits) == 1  # far ahead of the rate: the deadline decides
    no_rate = BodyLimits(cap=10**9, timeout=300, min_rate=0)
    assert next_wait(100, 0, no_rate) == 200


def test_a_declared_oversize_body_is_refused_before_it_is_read(service: Service) -> None:
    with _connect(service) as sock:
        sock.sendall(_upload_head(10**9))
        raw = _answer(sock)
    assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
