"""Managing requests through the real service, embedded and scale-out: cancel, retry,
delete and the retention period.

Real API and worker processes, a real loopback image host (slow and flaky routes), a real
signed-webhook receiver; on scale-out, PostgreSQL + Redis + S3 (moto).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imgbatch.config import Settings
from support.backends import scaleout_env
from support.databases import query
from support.imageserver import ImageServer
from support.receiver import Receiver
from support.s3server import SCRUBBED_AWS_VARS, S3Server
from support.service import Service, http, multipart, products_csv

SECRET = "whsec_" + base64.b64encode(b"lifecycle-webhook-secret-012345").decode()
ENV = {
    "IMGBATCH_WEBHOOK_SECRET": SECRET,
    "IMGBATCH_WEBHOOK_SCHEDULE": "0.2,0.4,0.8",
    "IMGBATCH_WEBHOOK_POLL_INTERVAL": "0.1",
    "IMGBATCH_FETCH_ATTEMPTS": "1",  # a host that answers 503 fails the image at once
}


BACKENDS = ["embedded", pytest.param("scaleout", marks=pytest.mark.scaleout)]


@contextlib.contextmanager
def deployment(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: dict[str, str] | None = None,
) -> Iterator[Service]:
    """The service in the shape `request.param` names, with this module's settings."""
    with contextlib.ExitStack() as stack:
        env = ENV | (extra or {})
        if request.param == "scaleout":
            for name in SCRUBBED_AWS_VARS:
                monkeypatch.delenv(name, raising=False)
            env |= stack.enter_context(scaleout_env(request.getfixturevalue("s3_server")))
        service = Service(tmp_path / "data", env=env)
        stack.callback(service.stop)
        service.start(workers=1, concurrency=2)
        yield service


@pytest.fixture(params=BACKENDS)
def managed(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Service]:
    with deployment(request, tmp_path, monkeypatch) as service:
        yield service


RETENTION_DAYS = 0.0001  # 8.6 seconds


@pytest.fixture(params=BACKENDS)
def retaining(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Service]:
    extra = {"IMGBATCH_RETENTION_DAYS": str(RETENTION_DAYS)}
    with deployment(request, tmp_path, monkeypatch, extra) as service:
        yield service


@pytest.fixture
def host(image_dir: Path) -> Iterator[ImageServer]:
    """An image host of this test alone: its flaky routes count from zero."""
    with ImageServer(image_dir) as server:
        yield server


def until(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def post(service: Service, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, _, raw = http("POST", service.url + path, body, headers)
    return status, json.loads(raw)


def upload(service: Service, urls: list[str], hook: Receiver) -> str:
    rows = [(f"Product {i}", [url]) for i, url in enumerate(urls, start=1)]
    status, answer = service.upload(products_csv(rows), webhook_url=hook.url)
    assert status == 202, answer
    hook.trust(answer["webhook_secret"])  # an upload's own URL: signed with its own secret
    return str(answer["request_id"])


def events(hook: Receiver, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The first `count` events, verified, as (webhook-id, event)."""
    received = hook.wait_for(count, timeout=60)
    assert all(r.verified for r in received)
    return [(r.headers["webhook-id"], json.loads(r.body)) for r in received]


def test_cancel_mid_run_then_retry(managed: Service, host: ImageServer) -> None:
    urls = [host.url(f"/slow?seconds=0.4&file=photo{i % 6}.jpg&n={i}") for i in range(20)]
    with Receiver() as hook:
        request_id = upload(managed, urls, hook)
        until(lambda: managed.status(request_id)["progress"]["succeeded"] >= 2, what="progress")
        status, doc = post(managed, f"/api/requests/{request_id}/cancel")
        assert status == 202, doc
        assert doc["request_id"] == request_id and doc["status"] in ("processing", "cancelled")
        assert doc["progress"]["cancelled"] > 0
        final = managed.wait_final(request_id)
        progress = final["progress"]
        assert final["status"] == "cancelled"
        assert progress["succeeded"] >= 2 and progress["failed"] == 0
        assert progress["succeeded"] + progress["cancelled"] == 20 and progress["cancelled"] > 0
        images = [image for product in final["products"] for image in product["images"]]
        cancelled = [image for image in images if image["status"] == "cancelled"]
        assert len(cancelled) == progress["cancelled"]
        assert all(i["output_url"] is None and i["error"] is None for i in cancelled)
        assert {p["status"] for p in final["products"]} == {"completed", "cancelled"}
        status, again = post(managed, f"/api/requests/{request_id}/cancel")
        assert (status, again["error"]["code"]) == (409, "already_finished")
        code, _, body = http("GET", final["output_csv_url"])  # offered for a cancelled request
        assert code == 200 and body.count(b"\n") == 21
        ((first_id, first),) = events(hook, 1)
        assert first["type"] == "request.completed"
        assert first["data"]["status"] == "cancelled"
        assert first["data"]["progress"] == progress

        status, doc = post(managed, f"/api/requests/{request_id}/retry")
        assert status == 202, doc
        assert doc["status"] == "processing" and doc["progress"]["cancelled"] == 0
        assert doc["completed_at"] is None and doc["output_csv_url"] is None
        final = managed.wait_final(request_id)
        assert final["status"] == "completed"
        assert final["progress"]["succeeded"] == 20
        _, (second_id, second) = events(hook, 2)
        assert second_id != first_id and second["type"] == "request.completed"
        assert second["data"]["status"] == "completed"
        status, _, raw = http("GET", f"{managed.url}/api/requests/{request_id}/webhooks")
        listed = json.loads(raw)["deliveries"]
        assert [(d["run"], d["event_id"]) for d in listed] == [(1, first_id), (2, second_id)]


def test_retry_upstream_failures_after_the_host_recovers(
    managed: Service, host: ImageServer
) -> None:
    urls = [
        host.url("/photo0.jpg"),
        host.url("/photo1.jpg"),
        host.url("/flaky/photo2.jpg?fail=1&status=503"),  # down once, then back
        host.url("/flaky/photo3.jpg?fail=1&status=502"),
    ]
    with Receiver() as hook:
        request_id = upload(managed, urls, hook)
        first_doc = managed.wait_final(request_id)
        assert first_doc["status"] == "completed_with_errors"
        codes = [e["code"] for p in first_doc["products"] for e in p["errors"]]
        assert codes == ["upstream", "upstream"]
        ((first_id, first),) = events(hook, 1)
        assert first["data"]["status"] == "completed_with_errors"

        path = f"/api/requests/{request_id}/retry"
        status, refused = post(managed, path, json.dumps({"codes": ["timeout"]}).encode())
        assert (status, refused["error"]["code"]) == (409, "nothing_to_retry")
        status, bad = post(managed, path, b'{"codes": "upstream"}')
        assert (status, bad["error"]["code"]) == (400, "bad_request")

        status, doc = post(managed, path, json.dumps({"codes": ["upstream"]}).encode())
        assert status == 202, doc
        assert doc["status"] == "processing" and doc["progress"]["pending"] == 2
        assert doc["progress"]["succeeded"] == 2 and doc["webhook"]["status"] == "waiting"
        status, running = post(managed, path)
        assert (status, running["error"]["code"]) == (409, "not_finished")

        final = managed.wait_final(request_id)
        assert final["status"] == "completed", final
        assert all(p["errors"] == [] for p in final["products"])
        assert all(p["output_urls"][0] for p in final["products"])
        _, (second_id, second) = events(hook, 2)
        assert second_id != first_id
        assert second["type"] == first["type"] == "request.completed"
        assert second["data"]["status"] == "completed"
        assert second["data"]["progress"]["succeeded"] == 4
        assert hook.requests[1].verified
        assert len(hook.requests) == 2  # one event per finalization, no more


# --- delete and retention ---------------------------------------------------------------


def stored_keys(service: Service, s3: S3Server | None, request_id: str) -> list[str]:
    """The objects stored for a request, read from the disk or the bucket itself."""
    storage_url = service.env.get("IMGBATCH_STORAGE_URL")
    if storage_url is None:
        root = service.data_dir / "images"
        found = (root / request_id).rglob("*")
        return sorted(p.relative_to(root).as_posix() for p in found if p.is_file())
    assert s3 is not None
    bucket, _, prefix = storage_url.removeprefix("s3://").partition("/")
    pages = (
        s3.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=bucket, Prefix=f"{prefix}/{request_id}/")
    )
    return sorted(
        item["Key"].removeprefix(prefix + "/")
        for page in pages
        for item in page.get("Contents", ())
    )


def ledger_rows(service: Service, request_id: str) -> dict[str, int]:
    url = (
        service.env.get("IMGBATCH_DATABASE_URL")
        or Settings(data_dir=service.data_dir).resolved_database_url
    )
    counts = {}
    for table, column in (
        ("requests", "id"),
        ("products", "request_id"),
        ("images", "request_id"),
        ("webhook_deliveries", "request_id"),
    ):
        ((count,),) = query(url, f"SELECT count(*) FROM {table} WHERE {column} = :r", r=request_id)
        counts[table] = count
    return counts


def s3_of(request: pytest.FixtureRequest, service: Service) -> S3Server | None:
    if "IMGBATCH_STORAGE_URL" not in service.env:
        return None
    server: S3Server = request.getfixturevalue("s3_server")
    return server


def routes_of(service: Service, request_id: str) -> list[tuple[str, str]]:
    base = f"{service.url}/api"
    return [
        ("GET", f"{base}/status/{request_id}"),
        ("GET", f"{base}/requests/{request_id}/output.csv"),
        ("GET", f"{base}/requests/{request_id}/webhooks"),
        ("POST", f"{base}/requests/{request_id}/webhooks/redeliver"),
        ("POST", f"{base}/requests/{request_id}/cancel"),
        ("POST", f"{base}/requests/{request_id}/retry"),
        ("DELETE", f"{base}/requests/{request_id}"),
    ]


def test_delete_removes_objects_then_rows_and_every_route_404s(
    managed: Service, host: ImageServer, request: pytest.FixtureRequest
) -> None:
    s3 = s3_of(request, managed)
    with Receiver() as hook:
        running = upload(managed, [host.url("/slow?seconds=3&file=photo0.jpg")], hook)
        status, _, raw = http("DELETE", f"{managed.url}/api/requests/{running}")
        assert (status, json.loads(raw)["error"]["code"]) == (409, "not_finished")
        assert post(managed, f"/api/requests/{running}/cancel")[0] == 202  # cancel first ...

        urls = [host.url("/photo1.jpg"), host.url("/photo2.jpg"), host.url("/missing.jpg")]
        request_id = upload(managed, urls, hook)
        doc = managed.wait_final(request_id)
        assert doc["status"] == "completed_with_errors"
        events(hook, 1)
        files = [url for p in doc["products"] for url in p["output_urls"] if url]
        assert len(files) == 2 and all(http("GET", url)[0] == 200 for url in files)
        keys = stored_keys(managed, s3, request_id)
        assert len(keys) == 2
        assert ledger_rows(managed, request_id) == {
            "requests": 1,
            "products": 3,
            "images": 3,
            "webhook_deliveries": 1,
        }

        status, _, body = http("DELETE", f"{managed.url}/api/requests/{request_id}")
        assert status == 204 and body == b""
        assert stored_keys(managed, s3, request_id) == []
        assert not (managed.data_dir / "images" / request_id).exists()  # no empty directories
        assert ledger_rows(managed, request_id) == dict.fromkeys(
            ("requests", "products", "images", "webhook_deliveries"), 0
        )
        for method, url in routes_of(managed, request_id):
            status, _, raw = http(method, url)
            assert status == 404, (method, url, raw)
            assert json.loads(raw)["error"]["code"] == "not_found"
        assert all(http("GET", url)[0] == 404 for url in files)

        managed.wait_final(running)  # ... then delete
        status, _, _ = http("DELETE", f"{managed.url}/api/requests/{running}")
        assert status == 204
        assert http("GET", f"{managed.url}/api/status/{running}")[0] == 404


def test_retention_deletes_finished_requests_after_the_period(
    retaining: Service, host: ImageServer, request: pytest.FixtureRequest
) -> None:
    s3 = s3_of(request, retaining)
    with Receiver() as hook:
        request_id = upload(retaining, [host.url("/photo3.jpg"), host.url("/photo4.jpg")], hook)
        doc = retaining.wait_final(request_id)
        finished = time.monotonic()
        assert doc["status"] == "completed"
        files = [url for p in doc["products"] for url in p["output_urls"]]
        assert len(stored_keys(retaining, s3, request_id)) == 2
        until(
            lambda: http("GET", f"{retaining.url}/api/status/{request_id}")[0] == 404,
            timeout=60,
            what="the retention sweep",
        )
        waited = time.monotonic() - finished
        assert waited >= RETENTION_DAYS * 86400 - 1  # not before the period
        until(lambda: ledger_rows(retaining, request_id)["requests"] == 0, what="the rows")
        assert stored_keys(retaining, s3, request_id) == []
        assert sum(ledger_rows(retaining, request_id).values()) == 0
        assert all(http("GET", url)[0] == 404 for url in files)


# --- history ---------------------------------------------------------------------------

ITEM_FIELDS = {
    "request_id",
    "status",
    "created_at",
    "completed_at",
    "filename",
    "products",
    "images",
    "progress",
    "savings",
}


def history(service: Service, query: str = "") -> tuple[int, dict[str, Any]]:
    status, _, raw = http("GET", f"{service.url}/api/requests{query}")
    return status, json.loads(raw)


def test_history_pages_newest_first_with_inserts_between_pages(
    managed: Service, host: ImageServer
) -> None:
    with Receiver() as hook:
        first = upload(managed, [host.url("/photo0.jpg"), host.url("/missing.jpg")], hook)
        second = upload(managed, [host.url("/photo1.jpg")], hook)
        third = upload(managed, [host.url("/photo2.jpg")], hook)
        docs = {rid: managed.wait_final(rid) for rid in (first, second, third)}

        status, page = history(managed, "?limit=2")
        assert status == 200, page
        assert [item["request_id"] for item in page["requests"]] == [third, second]
        assert page["next_cursor"]
        for item in page["requests"]:
            doc = docs[item["request_id"]]
            assert set(item) == ITEM_FIELDS
            assert item["filename"] == "p.csv"  # the multipart file part's name
            assert (item["status"], item["products"], item["images"]) == ("completed", 1, 1)
            assert item["progress"] == doc["progress"] and item["savings"] == doc["savings"]
            assert item["created_at"] == doc["created_at"]
            assert item["completed_at"] == doc["completed_at"]
            assert item["savings"]["images"] == 1 and item["savings"]["saved_bytes"] > 0

        # Two uploads between the pages: the next page does not shift.
        newer = [upload(managed, [host.url("/photo3.jpg")], hook) for _ in range(2)]
        status, page2 = history(managed, f"?limit=2&cursor={page['next_cursor']}")
        assert status == 200
        assert [item["request_id"] for item in page2["requests"]] == [first]
        assert page2["next_cursor"] is None
        (item,) = page2["requests"]
        assert item["status"] == "completed_with_errors" and item["progress"]["failed"] == 1
        status, top = history(managed, "?limit=2")
        assert [item["request_id"] for item in top["requests"]] == newer[::-1]

        status, failed = history(managed, "?status=completed_with_errors")
        assert [item["request_id"] for item in failed["requests"]] == [first]
        status, _, _ = http(
            "POST",
            managed.url + "/api/upload",
            products_csv([("Raw", [host.url("/photo4.jpg")])]),
            {"Content-Type": "text/csv"},
        )
        assert status == 202
        status, latest = history(managed, "?limit=1")
        assert latest["requests"][0]["filename"] is None  # a raw body has no file name

        for query, code in (
            ("?limit=0", "bad_request"),
            ("?limit=201", "bad_request"),
            ("?status=finished", "bad_request"),
            ("?cursor=not-a-cursor", "bad_request"),
        ):
            status, error = history(managed, query)
            assert (status, error["error"]["code"]) == (400, code), query

        assert http("DELETE", f"{managed.url}/api/requests/{second}")[0] == 204
        status, everything = history(managed, "?limit=200")
        listed = [item["request_id"] for item in everything["requests"]]
        assert second not in listed and {first, third, *newer} <= set(listed)


# --- idempotent uploads ---------------------------------------------------------------------


def keyed_upload(
    service: Service, csv: bytes, key: str, **fields: str
) -> tuple[int, dict[str, str], dict[str, Any]]:
    body, content_type = multipart(csv, **fields)
    status, headers, raw = http(
        "POST",
        service.url + "/api/upload",
        body,
        {"Content-Type": content_type, "Idempotency-Key": key},
    )
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(raw)


def test_idempotent_uploads_replay_conflict_and_race(managed: Service, host: ImageServer) -> None:
    csv = products_csv([("Shoe", [host.url("/photo5.jpg")])])
    other = products_csv([("Hat", [host.url("/photo4.jpg")])])
    status, headers, first = keyed_upload(managed, csv, "order-42", quality="60")
    assert status == 202 and "idempotent-replayed" not in headers
    # A retry after a timeout: a new multipart boundary, the same CSV and options.
    status, headers, again = keyed_upload(managed, csv, "order-42", quality="60")
    assert status == 202 and again == first and headers["idempotent-replayed"] == "true"
    status, _, reused = keyed_upload(managed, other, "order-42")
    assert (status, reused["error"]["code"]) == (422, "idempotency_key_reused")
    status, _, reused = keyed_upload(managed, csv, "order-42", quality="70")
    assert (status, reused["error"]["code"]) == (422, "idempotency_key_reused")
    for bad in ("", "x" * 256, "caf\u00e9"):
        status, _, raw = http(
            "POST",
            managed.url + "/api/upload",
            csv,
            {"Content-Type": "text/csv", "Idempotency-Key": bad.encode().decode("latin-1")},
        )
        assert (status, json.loads(raw)["error"]["code"]) == (400, "bad_idempotency_key"), bad

    # Eight clients at once with one key: one request, everybody gets its 202.
    barrier = threading.Barrier(8)
    answers: list[tuple[int, dict[str, Any]]] = []

    def send() -> None:
        barrier.wait()
        status, _, body = keyed_upload(managed, other, "batch-7")
        answers.append((status, body))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [status for status, _ in answers] == [202] * 8
    assert len({body["request_id"] for _, body in answers}) == 1
    status, page = history(managed, "?limit=200")
    listed = [item["request_id"] for item in page["requests"]]
    assert sorted(listed) == sorted({first["request_id"], answers[0][1]["request_id"]})
    assert managed.wait_final(first["request_id"])["options"]["quality"] == 60


# --- the ZIP of the results ---------------------------------------------------------------


def stored_object(service: Service, s3: S3Server | None, key: str) -> bytes:
    """An object's bytes as the store holds them (the file, or the bucket's object)."""
    storage_url = service.env.get("IMGBATCH_STORAGE_URL")
    if storage_url is None:
        return (service.data_dir / "images" / key).read_bytes()
    assert s3 is not None
    bucket, _, prefix = storage_url.removeprefix("s3://").partition("/")
    answer = s3.client().get_object(Bucket=bucket, Key=f"{prefix}/{key}")
    return bytes(answer["Body"].read())


def test_images_zip_holds_the_stored_objects_and_the_output_csv(
    managed: Service, host: ImageServer, request: pytest.FixtureRequest
) -> None:
    s3 = s3_of(request, managed)
    with Receiver() as hook:
        running = upload(managed, [host.url("/slow?seconds=3&file=photo0.jpg")], hook)
        status, _, raw = http("GET", f"{managed.url}/api/requests/{running}/images.zip")
        assert (status, json.loads(raw)["error"]["code"]) == (409, "not_finished")

        urls = [
            [host.url("/photo1.jpg"), host.url("/alpha.png")],
            [host.url("/missing.jpg")],
            [host.url("/photo.webp")],
        ]
        rows = [
            (name, product)
            for name, product in zip(["Red Shoe / 42", "Hat", "Caf\u00e9"], urls, strict=True)
        ]
        status, answer = managed.upload(products_csv(rows), webhook_url=hook.url)
        assert status == 202, answer
        hook.trust(answer["webhook_secret"])
        request_id = answer["request_id"]
        doc = managed.wait_final(request_id)
        assert doc["status"] == "completed_with_errors"

        status, headers, body = http("GET", f"{managed.url}/api/requests/{request_id}/images.zip")
        headers = {k.lower(): v for k, v in headers.items()}
        assert status == 200 and headers["content-type"] == "application/zip"
        assert headers["content-disposition"] == f'attachment; filename="imgbatch-{request_id}.zip"'
        assert "content-length" not in headers  # streamed
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            assert zf.testzip() is None
            assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
            entries = {info.filename: zf.read(info) for info in zf.infolist()}
        assert list(entries) == [
            "output.csv",
            "1/1-Red_Shoe_42.jpg",
            "1/2-Red_Shoe_42.png",
            "3/1-Caf\u00e9.webp",
        ]
        assert entries["output.csv"] == http("GET", doc["output_csv_url"])[2]
        images = [image for product in doc["products"] for image in product["images"]]
        done = [image for image in images if image["status"] == "done"]
        assert len(done) == 3
        for name, image in zip(list(entries)[1:], done, strict=True):
            key = image["output_url"].split("/files/", 1)[1]
            assert entries[name] == stored_object(managed, s3, key)  # byte-equal to the store
            assert entries[name] == http("GET", image["output_url"])[2]
            assert len(entries[name]) == image["bytes_out"]

        managed.wait_final(running)  # a cancelled or finished request has its ZIP too
        assert http("DELETE", f"{managed.url}/api/requests/{request_id}")[0] == 204
        status, _, raw = http("GET", f"{managed.url}/api/requests/{request_id}/images.zip")
        assert status == 404
