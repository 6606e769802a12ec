"""A hostile-input corpus run end to end through the real service.

CSV uploads that are not what they claim (archives, binary, bad encodings,
absurd quoting, limits exceeded, broken multipart, bodies that never end) and
images that lie (decompression bombs, truncated files, wrong types, enormous
dimensions in a tiny file). Every case gets its documented answer or per-image
code, never a 500, and the service keeps serving: the same worker process goes
on to compress good images afterwards.
"""

from __future__ import annotations

import gzip
import io
import json
import select
import socket
import struct
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import encode, photo
from support.imageserver import ImageServer
from support.jpegs import many_scan_jpeg
from support.service import Service, http, multipart, products_csv

MAX_CSV_BYTES = 256 * 1024
LIMITS = {
    "IMGBATCH_MAX_CSV_BYTES": str(MAX_CSV_BYTES),
    "IMGBATCH_MAX_ROWS": "50",
    "IMGBATCH_MAX_URLS_PER_ROW": "5",
    "IMGBATCH_MAX_URL_LENGTH": "300",
    "IMGBATCH_MAX_CELL_CHARS": "2000",
    "IMGBATCH_MAX_COLUMNS": "10",
    "IMGBATCH_FETCH_MAX_BYTES": str(4 * 1024 * 1024),
    # Let a 88 MP image past the pixel check so that only the worker's memory cap can stop it.
    "IMGBATCH_MAX_PIXELS": "100000000",
    "IMGBATCH_WORKER_MAX_RSS_MB": "448",
    "IMGBATCH_UPLOAD_RATE_LIMIT": "100000",
}
HEADER = b"S. No.,Product Name,Input Image Urls\r\n"
GOOD_ROW = b"1,Shoe,http://127.0.0.1:9/shoe.jpg\r\n"


# --- building hostile files ----------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, rows: int | None = None) -> bytes:
    """An RGB PNG of zeros whose header says width x height; only `rows` rows present if given."""
    row = b"\x00" * (1 + width * 3)
    packer = zlib.compressobj(6)
    idat = b"".join(packer.compress(row) for _ in range(height if rows is None else rows))
    idat += packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def gif_claiming(width: int, height: int) -> bytes:
    """A GIF whose logical screen is width x height, with a 1x1 frame."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b"\x3b"


def webp_claiming(width: int, height: int) -> bytes:
    """An extended (VP8X) WebP header announcing a width x height canvas, and nothing else."""
    payload = (
        b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
    chunk = b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is patched to say width x height."""
    data = bytearray(encode(photo(64, 48, seed=3), "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def hostile_images(root: Path) -> dict[str, tuple[str, str | None]]:
    """Write the image corpus; return {file name: (expected status, expected error code)}."""
    good_jpeg = encode(photo(320, 240, seed=5), "JPEG", quality=92)
    good_png = encode(photo(200, 150, seed=6), "PNG")
    files: dict[str, tuple[bytes, str, str | None]] = {
        "huge.png": (png(30_000, 30_000, rows=1), "failed", "too_many_pixels"),
        "huge.gif": (gif_claiming(65_535, 65_535), "failed", "too_many_pixels"),
        "huge.webp": (webp_claiming(16_383, 16_383), "failed", "too_many_pixels"),
        "huge.jpg": (jpeg_claiming(65_000, 65_000), "failed", "too_many_pixels"),
        "many-scans.jpg": (many_scan_jpeg(1200, 900, 400), "failed", "too_complex"),
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "failed", "corrupt_image"),
        "truncated.png": (good_png[: len(good_png) // 2], "failed", "corrupt_image"),
        "garbage-after-magic.png": (
            b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
            "failed",
            "corrupt_image",
        ),
        "html.jpg": (
            b"<!doctype html><html><body>not an image</body></html>",
            "failed",
            "not_an_image",
        ),
        "empty.jpg": (b"", "failed", "not_an_image"),
        "script.svg": (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "failed",
            "unsupported_format",
        ),
        "image.tiff": (encode(photo(32, 32), "TIFF"), "failed", "unsupported_format"),
        "image.bmp": (encode(photo(32, 32), "BMP"), "failed", "unsupported_format"),
        # Lies in the name only: the bytes decide, so this JPEG called .png is compressed as JPEG.
        "jpeg-named.png": (good_jpeg, "completed", None),
    }
    for name, (data, _, _) in files.items():
        (root / name).write_bytes(data)
    return {name: (status, code) for name, (_, status, code) in files.items()}


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-images")
    for i in range(3):
        (root / f"good{i}.jpg").write_bytes(
            encode(photo(480, 360, seed=20 + i), "JPEG", quality=90)
        )
    # 9400 x 9400 RGB: 88 MP (under the pixel limit and Pillow's bomb warning) in a 240 KB file,
    # ~350 MB once decoded: more than a worker capped at 448 MB of address space can allocate.
    (root / "memory-bomb.png").write_bytes(png(9400, 9400))
    return root


@pytest.fixture(scope="module")
def images(hostile_dir: Path) -> Iterator[ImageServer]:
    with ImageServer(hostile_dir) as server:
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("hostile") / "data", LIMITS)
    try:
        svc.start(workers=1, concurrency=1)
        yield svc
    finally:
        svc.stop()


def error_of(raw: bytes) -> dict[str, object]:
    body = json.loads(raw)
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


# --- the CSV corpus ----------------------------------------------------------------------


def _zip_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("products.csv", HEADER + b"0" * 50_000_000)  # 50 MB inside ~50 KB
    return out.getvalue()


def _rows(count: int) -> bytes:
    return HEADER + b"".join(
        b"%d,P%d,http://127.0.0.1:9/%d.jpg\r\n" % (i, i, i) for i in range(1, count + 1)
    )


CSV_CORPUS: dict[str, tuple[bytes, int, str]] = {
    "latin-1": (
        HEADER + "1,Café,http://127.0.0.1:9/a.jpg\r\n".encode("latin-1"),
        400,
        "bad_encoding",
    ),
    "utf-16": ((HEADER + GOOD_ROW).decode().encode("utf-16"), 400, "bad_encoding"),
    "nul bytes": (HEADER + b"1,Sh\x00oe,http://127.0.0.1:9/a.jpg\r\n", 415, "not_csv"),
    "binary": (bytes(range(256)) * 16, 415, "not_csv"),
    "zip bomb": (_zip_bomb(), 415, "not_csv"),
    "gzip bomb": (gzip.compress(HEADER + b"0" * 50_000_000), 415, "not_csv"),
    "pdf": (b"%PDF-1.7\n1 0 obj<<>>endobj\n", 415, "not_csv"),
    "png image": (encode(photo(16, 16), "PNG"), 415, "not_csv"),
    "unclosed quote": (
        HEADER + b'1,"Shoe,http://127.0.0.1:9/a.jpg\r\n' + GOOD_ROW * 500,
        400,
        "malformed_csv",
    ),
    "text after quote": (HEADER + b'1,"Shoe"x,http://127.0.0.1:9/a.jpg\r\n', 400, "malformed_csv"),
    "a wall of quotes": (HEADER + b'1,"' + b'"' * 100_000 + b"\r\n", 400, "malformed_csv"),
    "huge cell": (
        HEADER + b"1," + b"n" * 3000 + b",http://127.0.0.1:9/a.jpg\r\n",
        400,
        "malformed_csv",
    ),
    "too many columns": (
        HEADER + b"1,Shoe,http://127.0.0.1:9/a.jpg" + b",x" * 20 + b"\r\n",
        400,
        "malformed_csv",
    ),
    "commas only": (HEADER + b"," * 200_000 + b"\r\n", 400, "malformed_csv"),
    "too many rows": (_rows(60), 413, "too_many_rows"),
    "too many urls": (
        HEADER
        + b'1,Shoe,"'
        + b",".join(b"http://127.0.0.1:9/%d.jpg" % i for i in range(8))
        + b'"\r\n',
        422,
        "validation_failed",
    ),
    "url too long": (
        HEADER + b"1,Shoe,http://127.0.0.1:9/" + b"a" * 400 + b"\r\n",
        422,
        "validation_failed",
    ),
    "javascript url": (HEADER + b"1,Shoe,javascript:alert(1)\r\n", 422, "validation_failed"),
    "file url": (HEADER + b"1,Shoe,file:///etc/passwd\r\n", 422, "validation_failed"),
    "bidi override in url": (
        HEADER + "1,Shoe,http://127.0.0.1:9/\u202egpj.exe\r\n".encode(),
        422,
        "validation_failed",
    ),
    "empty": (b"", 422, "empty_csv"),
    "blank lines only": (b"\r\n" * 50_000, 422, "empty_csv"),
    "header only": (HEADER, 422, "empty_csv"),
    "no header": (GOOD_ROW * 3, 400, "bad_header"),
    "over the size cap": (
        HEADER + GOOD_ROW * (MAX_CSV_BYTES // len(GOOD_ROW) + 10),
        413,
        "too_large",
    ),
}


@pytest.mark.parametrize("case", list(CSV_CORPUS), ids=list(CSV_CORPUS))
def test_hostile_csv_is_refused_with_its_documented_error(service: Service, case: str) -> None:
    data, expected_status, expected_code = CSV_CORPUS[case]
    body, content_type = multipart(data)
    status, _, raw = http("POST", service.url + "/api/upload", body, {"Content-Type": content_type})
    assert (status, error_of(raw)["code"]) == (expected_status, expected_code), raw[:300]
    # The same bytes as a raw text/csv body get the same answer.
    status, _, raw = http("POST", service.url + "/api/upload", data, {"Content-Type": "text/csv"})
    assert (status, error_of(raw)["code"]) == (expected_status, expected_code), raw[:300]


def _multipart_parts(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


GOOD_CSV = HEADER + GOOD_ROW
REQUEST_CORPUS: dict[str, tuple[bytes, str | None, int, str]] = {
    "json body": (b"{}", "application/json", 415, "unsupported_media_type"),
    "zip content type": (_zip_bomb(), "application/zip", 415, "unsupported_media_type"),
    "no content type": (GOOD_CSV, None, 415, "unsupported_media_type"),
    "multipart without boundary": (GOOD_CSV, "multipart/form-data", 400, "bad_multipart"),
    "multipart garbage": (
        b"\x00\xff" * 500,
        "multipart/form-data; boundary=xyz",
        400,
        "bad_multipart",
    ),
    "no file field": (*_multipart_parts(("quality", None, b"50")), 400, "missing_file"),
    "file sent as a plain field": (
        *_multipart_parts(("file", None, GOOD_CSV)),
        400,
        "missing_file",
    ),
    "two files": (
        *_multipart_parts(("file", "a.csv", GOOD_CSV), ("file", "b.csv", GOOD_CSV)),
        400,
        "too_many_files",
    ),
    "too many fields": (
        *_multipart_parts(("file", "a.csv", GOOD_CSV), *[(f"f{i}", None, b"x") for i in range(40)]),
        400,
        "bad_multipart",
    ),
    "huge form field": (
        *_multipart_parts(("file", "a.csv", GOOD_CSV), ("webhook_url", None, b"h" * 100_000)),
        400,
        "bad_multipart",
    ),
    "non-utf-8 field": (
        *_multipart_parts(("file", "a.csv", GOOD_CSV), ("format", None, b"\xff\xfe\xfa")),
        400,
        "bad_field",
    ),
    "webhook url too long": (
        *_multipart_parts(
            ("file", "a.csv", GOOD_CSV), ("webhook_url", None, b"http://127.0.0.1/" + b"a" * 3000)
        ),
        422,
        "bad_webhook_url",
    ),
    "webhook url not http": (
        *_multipart_parts(
            ("file", "a.csv", GOOD_CSV), ("webhook_url", None, b"gopher://127.0.0.1:70/_x")
        ),
        422,
        "bad_webhook_url",
    ),
    "quality not a number": (
        *_multipart_parts(("file", "a.csv", GOOD_CSV), ("quality", None, b"1e999")),
        400,
        "bad_field",
    ),
    "unknown format": (
        *_multipart_parts(("file", "a.csv", GOOD_CSV), ("format", None, b"svg")),
        400,
        "bad_field",
    ),
}


@pytest.mark.parametrize("case", list(REQUEST_CORPUS), ids=list(REQUEST_CORPUS))
def test_hostile_request_is_refused_with_its_documented_error(service: Service, case: str) -> None:
    body, content_type, expected_status, expected_code = REQUEST_CORPUS[case]
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, raw = http("POST", service.url + "/api/upload", body, headers)
    assert (status, error_of(raw)["code"]) == (expected_status, expected_code), raw[:300]


def test_declared_oversize_upload_is_refused_before_the_body_is_read(service: Service) -> None:
    head = (
        f"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
        f"Content-Length: {50 * MAX_CSV_BYTES}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(head + HEADER)  # the announced body is never sent
        answer = _read_response(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"too_large"' in answer


def _read_response(sock: socket.socket) -> bytes:
    """Headers and the whole Content-Length body, however the segments arrive."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return head + b"\r\n\r\n" + body


ENDLESS = 256 * 1024 * 1024  # far more than any socket buffer could hold


@pytest.mark.parametrize("content_type", ["text/csv", "multipart/form-data; boundary=b"])
def test_endless_chunked_upload_is_cut_off_near_the_cap(
    service: Service, content_type: str
) -> None:
    head = (
        "POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b"1,Shoe,http://127.0.0.1:9/a.jpg\r\n" * 500
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(head)
        while sent < ENDLESS:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    # Answered while the body was still coming: never read (let alone buffered) to the end.
    # What was sent past the cap sat in the kernel's socket buffers (up to tcp_rmem's 32 MiB).
    assert sent < ENDLESS // 4


# --- the image corpus ------------------------------------------------------------------------


def test_hostile_images_fail_with_clear_codes(
    service: Service, images: ImageServer, hostile_dir: Path
) -> None:
    expected = hostile_images(hostile_dir)
    big = {
        "download over the byte cap": ("/big?bytes=6000000", "too_large"),
        "over the cap, no Content-Length": ("/big?bytes=6000000&length=none", "too_large"),
        "lying Content-Length": ("/big?bytes=6000000&length=1000", "not_an_image"),
        "malformed Location": ("/redirect?to=http%3A%2F%2F%5B%3A%3A1", "upstream"),
    }
    rows = [(name, [images.url(name)]) for name in expected]
    rows += [(name, [images.url(path)]) for name, (path, _) in big.items()]
    rows.append(("good", [images.url("good0.jpg")]))
    status, answer = service.upload(products_csv(rows))
    assert status == 202, answer

    doc = service.wait_final(answer["request_id"])
    by_name = {p["product_name"]: p for p in doc["products"]}
    assert by_name["good"]["status"] == "completed"
    outcomes = {
        name: (p["status"], p["errors"][0]["code"] if p["errors"] else None)
        for name, p in by_name.items()
    }
    wanted = {
        **expected,
        **{name: ("failed", code) for name, (_, code) in big.items()},
        "good": ("completed", None),
    }
    assert outcomes == wanted
    for product in doc["products"]:
        for error in product["errors"]:
            assert error["message"] and "Traceback" not in error["message"]
    assert by_name["jpeg-named.png"]["output_urls"][0].endswith(".jpg")


def test_a_jpeg_that_would_cost_minutes_of_cpu_is_refused_at_once(
    service: Service, images: ImageServer, hostile_dir: Path
) -> None:
    # 4000 x 4000 with 15,000 scans: 1.5 MB that libjpeg would decode for about two
    # minutes of CPU (7.5 s per 1,000 scans measured), holding a worker all along.
    (hostile_dir / "scan-bomb.jpg").write_bytes(many_scan_jpeg(4000, 4000, 15_000))
    started = time.monotonic()
    status, answer = service.upload(products_csv([("Scans", [images.url("scan-bomb.jpg")])]))
    assert status == 202, answer
    doc = service.wait_final(answer["request_id"], timeout=30)
    assert time.monotonic() - started < 10
    (product,) = doc["products"]
    assert product["status"] == "failed"
    (error,) = product["errors"]
    assert error["code"] == "too_complex", error
    assert "scans" in error["message"]


def _worker_processes(service: Service) -> set[int]:
    """Pids of the worker's forked children (the processes that run image jobs)."""
    (worker,) = service.workers
    assert worker.poll() is None, service.logs()
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    return {int(pid) for pid in children}


def test_memory_bomb_fails_one_image_and_the_same_worker_goes_on(
    service: Service, images: ImageServer
) -> None:
    before = _worker_processes(service)
    assert before

    status, answer = service.upload(products_csv([("Bomb", [images.url("memory-bomb.png")])]))
    assert status == 202, answer
    doc = service.wait_final(answer["request_id"])
    (product,) = doc["products"]
    assert product["status"] == "failed"
    (error,) = product["errors"]
    assert error["code"] == "too_many_pixels", error
    assert "memory" in error["message"], error

    status, answer = service.upload(products_csv([("After the bomb", [images.url("good1.jpg")])]))
    assert status == 202, answer
    assert service.wait_final(answer["request_id"])["status"] == "completed"
    assert _worker_processes(service) == before  # no worker died or was replaced


def test_after_the_corpus_a_normal_upload_still_completes(
    service: Service, images: ImageServer
) -> None:
    rows = [
        (f"Product {i}", [images.url(f"good{i}.jpg"), images.url(f"good{(i + 1) % 3}.jpg")])
        for i in range(3)
    ]
    status, answer = service.upload(products_csv(rows), quality="60", format="webp")
    assert status == 202, answer
    doc = service.wait_final(answer["request_id"])
    assert doc["status"] == "completed" and doc["progress"]["succeeded"] == 6
    assert http("GET", service.url + "/healthz")[0] == 200
    assert "Exception in ASGI application" not in service.logs()
