"""Uploads as other clients send them, through the real service (API + worker, loopback only).

The CSV under any single file-part name, `webhookUrl` and `callback_url` as
aliases whose receiver really hears the event, unknown fields and query
parameters refused by name, trailing slashes answered directly (no 307), and
an output CSV uploaded again as input.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from support.imageserver import ImageServer
from support.receiver import Receiver
from support.service import Service, products_csv

ACCEPTED = "webhook_url (or webhookUrl, callback_url), quality, format, max_width, max_height"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = Service(tmp_path_factory.mktemp("svc") / "data")
    try:
        service.start(workers=1, concurrency=2)
        yield service
    finally:
        service.stop()


def call(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client: redirects are NOT followed, as with plain curl."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def form(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart body of (field name, file name or None for a text field, value) parts."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post(
    svc: Service, *parts: tuple[str, str | None, bytes], path: str = "/api/upload"
) -> tuple[int, dict[str, Any]]:
    body, headers = form(*parts)
    status, _, raw = call("POST", svc.url + path, body, headers)
    return status, json.loads(raw)


@pytest.fixture(scope="module")
def good_csv(image_server: ImageServer) -> bytes:
    return products_csv([("Shirt", [image_server.url("/photo0.jpg")])])


@pytest.mark.parametrize("name", ["file", "csv", "csvFile", "upload", "data"])
def test_the_csv_is_taken_from_one_file_part_whatever_its_name(
    svc: Service, good_csv: bytes, name: str
) -> None:
    status, answer = post(svc, (name, "products.csv", good_csv))
    assert status == 202, answer
    assert answer["images"] == 1


def test_two_file_parts_are_refused_naming_them(svc: Service, good_csv: bytes) -> None:
    status, answer = post(svc, ("csv", "a.csv", good_csv), ("file", "b.csv", good_csv))
    assert status == 400
    assert answer["error"]["code"] == "too_many_files"
    assert answer["error"]["message"] == (
        "send one CSV file per upload; got 2 file parts: 'csv' (a.csv), 'file' (b.csv)"
    )
    assert [d["field"] for d in answer["error"]["details"]] == ["csv", "file"]


def test_csv_sent_as_a_text_field_gets_a_hint(svc: Service, good_csv: bytes) -> None:
    status, answer = post(svc, ("csv", None, good_csv))
    assert (status, answer["error"]["code"]) == (400, "missing_file")
    assert "field 'csv' holds text, not a file" in answer["error"]["message"]


@pytest.mark.parametrize("alias", ["webhookUrl", "callback_url", "webhook_url", "Webhook-URL"])
def test_webhook_aliases_reach_the_receiver(svc: Service, good_csv: bytes, alias: str) -> None:
    with Receiver() as hook:
        status, answer = post(svc, ("csvFile", "p.csv", good_csv), (alias, None, hook.url.encode()))
        assert status == 202, answer
        doc = svc.wait_final(answer["request_id"])
        assert doc["webhook"]["url"] == hook.url
        (event,) = hook.wait_for(1)
        assert event.json()["data"]["request_id"] == answer["request_id"]


def test_unknown_form_fields_are_refused_naming_the_accepted_ones(
    svc: Service, good_csv: bytes
) -> None:
    status, answer = post(
        svc,
        ("file", "p.csv", good_csv),
        ("callbackURL", None, b"http://127.0.0.1:9/h"),  # an alias in another spelling: fine
        ("notify", None, b"http://127.0.0.1:9/h"),
        ("resolution", None, b"high"),
    )
    assert status == 400
    error = answer["error"]
    assert error["code"] == "unknown_field"
    assert error["message"] == (
        "unknown form field 'notify', form field 'resolution'; "
        f"accepted fields: {ACCEPTED}, and the CSV as one file part"
    )
    assert [d["field"] for d in error["details"]] == ["notify", "resolution"]


def test_unknown_query_parameters_are_refused_too(svc: Service, good_csv: bytes) -> None:
    for_form = post(svc, ("file", "p.csv", good_csv), path="/api/upload?qualty=20")
    assert for_form[0] == 400
    assert for_form[1]["error"]["message"].startswith("unknown query parameter 'qualty';")
    status, _, raw = call(
        "POST", svc.url + "/api/upload?hook=x", good_csv, {"Content-Type": "text/csv"}
    )
    assert status == 400
    assert json.loads(raw)["error"]["code"] == "unknown_field"
    status, _, raw = call(
        "POST", svc.url + "/api/upload?quality=20", good_csv, {"Content-Type": "text/csv"}
    )
    assert status == 202, raw


def test_one_option_twice_with_different_values_is_refused(svc: Service, good_csv: bytes) -> None:
    status, answer = post(
        svc,
        ("file", "p.csv", good_csv),
        ("webhook_url", None, b"http://127.0.0.1:9/a"),
        ("webhookUrl", None, b"http://127.0.0.1:9/b"),
    )
    assert status == 400
    assert answer["error"]["code"] == "conflicting_fields"
    assert answer["error"]["message"] == (
        "webhook_url was sent as 'webhook_url' and as 'webhookUrl' with different values; "
        "send each option once"
    )
    same = post(
        svc,
        ("file", "p.csv", good_csv),
        ("quality", None, b"40"),
        path="/api/upload?quality=40",
    )
    assert same[0] == 202, same[1]


def test_trailing_slashes_are_served_directly(svc: Service, good_csv: bytes) -> None:
    status, answer = post(svc, ("file", "p.csv", good_csv), path="/api/upload/")
    assert status == 202, answer
    rid = answer["request_id"]
    svc.wait_final(rid)
    for path in (
        f"/api/status/{rid}/",
        f"/api/status/{rid}/?limit=1",
        f"/api/requests/{rid}/output.csv/",
        f"/api/requests/{rid}/webhooks/",
        "/healthz/",
        "/readyz/",
        "/metrics/",
    ):
        status, headers, raw = call("GET", svc.url + path)
        assert status == 200, (path, status, headers.get("location"), raw[:200])
    status, _, raw = call("GET", f"{svc.url}/api/status/{rid}/?limit=1")
    assert json.loads(raw)["limit"] == 1
    status, _, raw = call("GET", f"{svc.url}/api/status/nope/")
    assert status == 404


def _output_rows(svc: Service, rid: str) -> list[list[str]]:
    status, _, raw = call("GET", f"{svc.url}/api/requests/{rid}/output.csv")
    assert status == 200
    return list(csv.reader(io.StringIO(raw.decode())))


def test_an_output_csv_uploaded_again_runs_the_same_catalogue(
    svc: Service, image_server: ImageServer, tmp_path: Path
) -> None:
    first_csv = products_csv(
        [
            ("Shirt", [image_server.url("/photo1.jpg"), image_server.url("/missing.jpg")]),
            ("Hat", [image_server.url("/photo2.jpg")]),
        ]
    )
    status, answer = post(svc, ("file", "p.csv", first_csv))
    assert status == 202, answer
    assert svc.wait_final(answer["request_id"])["status"] == "completed_with_errors"
    status, _, output = call("GET", f"{svc.url}/api/requests/{answer['request_id']}/output.csv")
    assert output.decode().startswith("S. No.,Product Name,Input Image Urls,Output Image Urls")
    status, again = post(svc, ("csv", "output.csv", output), ("quality", None, b"30"))
    assert status == 202, again
    assert (again["products"], again["images"]) == (2, 3)
    svc.wait_final(again["request_id"])
    first, second = (_output_rows(svc, r) for r in (answer["request_id"], again["request_id"]))
    assert [row[:3] for row in second] == [row[:3] for row in first]
