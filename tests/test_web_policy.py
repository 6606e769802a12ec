"""The dashboard's Content-Security-Policies (pure) and its static routes (no browser needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imgbatch.web.policy import origin_of, page_csp
from support.service import Service, http


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://cdn.shop.example/a/b.jpg?x=1", "https://cdn.shop.example"),
        ("http://127.0.0.1:9000/a.jpg", "http://127.0.0.1:9000"),
        ("HTTP://Img.Example:8080/", "http://img.example:8080"),
        ("http://[::1]:8000/x.png", "http://[::1]:8000"),
        ("https://bücher.example/a.jpg", "https://xn--bcher-kva.example"),
        ("https://user:pw@img.example/a.jpg", "https://img.example"),
    ],
)
def test_origin_of_an_image_url(url: str, origin: str) -> None:
    assert origin_of(url) == origin


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "ftp://img.example/a.jpg",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "https://img.example;script-src/a.jpg",  # nothing may end or extend the directive
        "https://img.example:99999/a.jpg",
        "https:///a.jpg",
        "https://*.example/a.jpg",
        "https://a b.example/",
    ],
)
def test_origin_of_refuses_what_is_not_a_plain_http_origin(url: str | None) -> None:
    assert origin_of(url) is None


def test_page_csp_allows_own_code_only_and_the_given_image_origins() -> None:
    csp = page_csp(["https://cdn.example", None, "https://cdn.example", "http://127.0.0.1:9"])
    directives = dict(d.strip().partition(" ")[::2] for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["img-src"] == "'self' https://cdn.example http://127.0.0.1:9"
    assert directives["frame-ancestors"] == "'none'" and "unsafe" not in csp


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {"IMGBATCH_PUBLIC_STORAGE_BASE_URL": "https://bucket.example/images"}
    with Service(tmp_path_factory.mktemp("web-policy"), env=env) as service:
        service.start(workers=0)
        yield service


def test_pages_are_shells_with_the_strict_policy(svc: Service) -> None:
    for path in ("/", "/requests/0123abcd", "/requests/0123abcd/compare/1/1"):
        status, headers, body = http("GET", svc.url + path)
        assert status == 200 and "text/html" in headers["content-type"]
        img = next(d for d in headers["content-security-policy"].split(";") if "img-src" in d)
        # Thumbnails from the public names of this service and of the bucket; nothing else.
        assert img.split()[1:] == ["'self'", svc.url, "https://bucket.example"]
        assert b"<script>" not in body and b'type="module"' in body
        assert headers["cache-control"] == "no-cache"


def test_static_files_and_favicon(svc: Service) -> None:
    status, headers, _ = http("GET", svc.url + "/static/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert http("GET", svc.url + "/static/app.css")[1]["content-type"].startswith("text/css")
    status, headers, body = http("GET", svc.url + "/favicon.ico")
    assert status == 200 and headers["content-type"] == "image/svg+xml" and b"<svg" in body
    for name in ("nope.js", "..%2Fpolicy.py", "%2e%2e%2f__init__.py", "app.html"):
        assert http("GET", f"{svc.url}/static/{name}")[0] == 404, name
    assert http("GET", f"{svc.url}/requests/x/compare/one/1")[0] == 400
