"""End to end on embedded defaults: a real server process, real worker processes, a real image server."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from PIL import Image

from support.imageserver import ImageServer
from support.service import Service, http


def csv_bytes(rows: list[tuple[str, str, list[str]]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    for serial, name, urls in rows:
        writer.writerow([serial, name, ",".join(urls)])
    return out.getvalue().encode()


def read_output(service: Service, request_id: str) -> list[list[str]]:
    status, headers, raw = http("GET", f"{service.url}/api/requests/{request_id}/output.csv")
    assert status == 200, raw
    assert headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(raw.decode())))


def test_upload_process_and_download(
    service: Service, image_server: ImageServer, image_dir: Path
) -> None:
    rows = [
        ("1", "Red shoe", [image_server.url("/photo0.jpg"), image_server.url("/photo1.jpg")]),
        ("2", "Blue hat", [image_server.url("/alpha.png")]),
        ("3", "Green bag", [image_server.url("/photo.webp"), image_server.url("/photo2.jpg")]),
    ]
    status, answer = service.upload(csv_bytes(rows))
    assert status == 202, answer
    assert answer["status"] == "pending" and answer["products"] == 3 and answer["images"] == 5
    request_id = answer["request_id"]
    assert answer["status_url"] == f"/api/status/{request_id}"
    assert len(request_id) >= 32

    doc = service.wait_final(request_id)
    assert doc["status"] == "completed", doc
    assert doc["progress"] == {
        "total": 5,
        "succeeded": 5,
        "failed": 0,
        "pending": 0,
        "cancelled": 0,
        "percent": 100.0,
    }
    assert doc["completed_at"] and doc["created_at"] and doc["updated_at"]
    assert doc["output_csv_url"] == f"{service.url}/api/requests/{request_id}/output.csv"
    assert [p["serial_number"] for p in doc["products"]] == [1, 2, 3]
    assert all(p["status"] == "completed" and p["errors"] == [] for p in doc["products"])

    table = read_output(service, request_id)
    assert table[0] == ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls"]
    assert [r[:2] for r in table[1:]] == [["1", "Red shoe"], ["2", "Blue hat"], ["3", "Green bag"]]
    for (serial, _name, inputs), row in zip(rows, table[1:], strict=True):
        assert row[2] == ",".join(inputs)
        outputs = row[3].split(",")
        assert len(outputs) == len(inputs)
        for input_url, output_url in zip(inputs, outputs, strict=True):
            assert output_url.startswith(f"{service.url}/files/{request_id}/{serial}/")
            code, headers, data = http("GET", output_url)
            assert code == 200
            original = (image_dir / input_url.rsplit("/", 1)[1]).read_bytes()
            assert len(data) <= len(original)
            with Image.open(io.BytesIO(data)) as img, Image.open(io.BytesIO(original)) as src:
                assert img.size == src.size
                assert headers["content-type"] == Image.MIME[img.format]
            assert "max-age" in headers["cache-control"]
    # JPEG photos at quality 50 really shrink.
    jpeg_out = table[1][3].split(",")[0]
    assert len(http("GET", jpeg_out)[2]) < 0.8 * (image_dir / "photo0.jpg").stat().st_size


def test_broken_urls_complete_with_errors(service: Service, image_server: ImageServer) -> None:
    rows = [
        ("1", "Good", [image_server.url("/photo3.jpg")]),
        ("2", "Missing", [image_server.url("/nope.jpg"), image_server.url("/photo4.jpg")]),
        ("3", "Liar", [image_server.url("/not-an-image.jpg")]),
    ]
    status, answer = service.upload(csv_bytes(rows), quality="40")
    assert status == 202, answer
    doc = service.wait_final(answer["request_id"])
    assert doc["status"] == "completed_with_errors"
    assert doc["progress"]["succeeded"] == 2 and doc["progress"]["failed"] == 2
    by_serial = {p["serial_number"]: p for p in doc["products"]}
    assert by_serial[1]["status"] == "completed"
    missing = by_serial[2]
    assert missing["status"] == "completed_with_errors"
    assert missing["output_urls"][0] is None and missing["output_urls"][1]
    assert missing["errors"][0]["code"] == "not_found" and "404" in missing["errors"][0]["message"]
    assert by_serial[3]["status"] == "failed"
    assert by_serial[3]["errors"][0]["code"] == "not_an_image"

    table = read_output(service, answer["request_id"])
    assert (
        table[2][3].startswith(",") and table[2][3].count(",") == 1
    )  # position kept, failed one empty
    assert table[3][3] == ""


def test_all_failed_request_is_failed(service: Service, image_server: ImageServer) -> None:
    status, answer = service.upload(csv_bytes([("1", "Gone", [image_server.url("/status/404")])]))
    assert status == 202
    doc = service.wait_final(answer["request_id"])
    assert doc["status"] == "failed"
    assert doc["products"][0]["status"] == "failed"


def test_status_and_output_errors(service: Service, image_server: ImageServer) -> None:
    code, _, raw = http("GET", f"{service.url}/api/status/0123456789abcdef0123456789abcdef")
    assert code == 404 and b'"not_found"' in raw
    slow = image_server.url("/slow?seconds=3&file=photo5.jpg")
    status, answer = service.upload(csv_bytes([("1", "Slow", [slow])]))
    assert status == 202
    code, _, raw = http("GET", f"{service.url}/api/requests/{answer['request_id']}/output.csv")
    assert code == 409 and b'"not_finished"' in raw
    assert service.wait_final(answer["request_id"])["status"] == "completed"


def test_format_and_pagination(service: Service, image_server: ImageServer) -> None:
    rows = [(str(i), f"P{i}", [image_server.url(f"/photo{i % 6}.jpg")]) for i in range(1, 8)]
    status, answer = service.upload(csv_bytes(rows), format="webp", quality="60")
    assert status == 202
    request_id = answer["request_id"]
    service.wait_final(request_id)
    code, _, raw = http("GET", f"{service.url}/api/status/{request_id}?offset=2&limit=3")
    assert code == 200
    import json

    doc = json.loads(raw)
    assert [p["serial_number"] for p in doc["products"]] == [3, 4, 5]
    assert doc["progress"]["total"] == 7 and doc["products_total"] == 7
    out = doc["products"][0]["output_urls"][0]
    assert out.endswith(".webp")
    assert http("GET", out)[1]["content-type"] == "image/webp"


def test_raw_csv_body_and_validation_errors(service: Service, image_server: ImageServer) -> None:
    body = csv_bytes([("1", "Raw", [image_server.url("/photo0.jpg")])])
    code, _, raw = http("POST", f"{service.url}/api/upload", body, {"Content-Type": "text/csv"})
    assert code == 202, raw

    bad = (
        b"S. No.,Product Name,Input Image Urls\n1,,ftp://x/y.jpg\n1,Dup,https://ok.example/a.jpg\n"
    )
    status, answer = service.upload(bad)
    assert status == 422
    details = answer["error"]["details"]
    assert {d["row"] for d in details} >= {2, 3}
    assert all({"row", "column", "message"} <= d.keys() for d in details)

    code, _, raw = http(
        "POST", f"{service.url}/api/upload", b"{}", {"Content-Type": "application/json"}
    )
    assert code == 415
    status, answer = service.upload(body, quality="0")
    assert status == 400 and answer["error"]["code"] == "bad_field"
    status, answer = service.upload(body, format="tiff")
    assert status == 400


def test_health_and_docs(service: Service) -> None:
    assert http("GET", service.url + "/healthz")[0] == 200
    code, _, raw = http("GET", service.url + "/readyz")
    assert code == 200 and b'"database":"ok"' in raw.replace(b" ", b"")
    assert http("GET", service.url + "/openapi.json")[0] == 200
    assert http("GET", service.url + "/")[0] == 200
    assert http("GET", service.url + "/files/../../etc/passwd")[0] == 404
