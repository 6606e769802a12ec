"""Outcomes through the real service (API + worker processes, a real image server and webhook
receiver): per-image facts and savings in the status document and the webhook event,
images.csv, resizing, quality=auto, bad option values, defaults and `submit --wait`."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import ExifTags, Image
from standardwebhooks.webhooks import Webhook

from support.imageserver import ImageServer
from support.receiver import Receiver
from support.service import Service, http

SECRET = "whsec_" + base64.b64encode(b"e2e-outcomes-secret-0123456789ab").decode()
FACTS = ("format", "width", "height", "bytes_in", "bytes_out", "quality")


def csv_bytes(products: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    for serial, urls in enumerate(products, start=1):
        writer.writerow([serial, f"Product {serial}", ",".join(urls)])
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One deployment for the module, webhooks signed; each test uses its own requests."""
    service = Service(
        tmp_path_factory.mktemp("outcomes") / "data",
        env={
            "IMGBATCH_WEBHOOK_SECRET": SECRET,
            "IMGBATCH_WEBHOOK_SCHEDULE": "0.2,0.4,0.8",
            "IMGBATCH_WEBHOOK_POLL_INTERVAL": "0.1",
        },
    )
    try:
        service.start(workers=1, concurrency=2)
        yield service
    finally:
        service.stop()


def submit(svc: Service, products: list[list[str]], **fields: str) -> str:
    status, answer = svc.upload(csv_bytes(products), **fields)
    assert status == 202, answer
    return str(answer["request_id"])


def test_status_and_webhook_report_images_and_savings(
    svc: Service, image_server: ImageServer, image_dir: Path
) -> None:
    products = [
        [image_server.url("/photo0.jpg"), image_server.url("/missing.jpg")],
        [image_server.url("/alpha.png")],
    ]
    with Receiver() as hook:
        status, answer = svc.upload(csv_bytes(products), webhook_url=hook.url)
        assert status == 202, answer
        rid, secret = answer["request_id"], answer["webhook_secret"]
        hook.trust(secret)
        doc = svc.wait_final(rid)
        (received,) = hook.wait_for(1)
    assert doc["status"] == "completed_with_errors"
    assert doc["options"] == {
        "quality": 50,
        "format": "keep",
        "max_width": None,
        "max_height": None,
    }

    first, second = doc["products"]
    assert [i["input_url"] for i in first["images"]] == products[0]  # input order
    photo, missing = first["images"]
    original = (image_dir / "photo0.jpg").read_bytes()
    code, _, stored = http("GET", photo["output_url"])
    assert code == 200
    assert photo == {
        "input_url": products[0][0],
        "output_url": first["output_urls"][0],
        "status": "done",
        "format": "jpeg",
        "width": 640,
        "height": 480,
        "bytes_in": len(original),
        "bytes_out": len(stored),
        "quality": 50,
        "error": None,
    }
    assert missing["status"] == "failed" and missing["output_url"] is None
    assert all(missing[name] is None for name in FACTS)
    assert missing["error"]["code"] == "not_found" and "404" in missing["error"]["message"]
    assert first["errors"][0]["code"] == "not_found"  # the existing fields stay

    (png,) = second["images"]
    assert png["format"] == "png" and png["quality"] is None  # no quality scale
    assert (png["width"], png["height"]) == (320, 240)

    done = [photo, png]
    bytes_in = sum(i["bytes_in"] for i in done)
    bytes_out = sum(i["bytes_out"] for i in done)
    assert doc["savings"] == {
        "images": 2,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "saved_bytes": bytes_in - bytes_out,
        "saved_percent": round(100 * (bytes_in - bytes_out) / bytes_in, 1),
    }
    assert doc["savings"]["saved_percent"] > 20

    assert received.verified
    event: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    assert event["data"]["savings"] == doc["savings"]


def test_savings_are_zero_and_facts_null_until_done(
    svc: Service, image_server: ImageServer
) -> None:
    rid = submit(svc, [[image_server.url("/slow?seconds=2&file=photo1.jpg")]])
    doc = svc.status(rid)
    assert doc["savings"] == {
        "images": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "saved_bytes": 0,
        "saved_percent": 0.0,
    }
    (image,) = doc["products"][0]["images"]
    assert image["status"] in ("pending", "processing")
    assert image["output_url"] is None and image["error"] is None
    assert all(image[name] is None for name in FACTS)
    final = svc.wait_final(rid)
    assert final["savings"]["images"] == 1 and final["savings"]["saved_bytes"] > 0


# --- images.csv ------------------------------------------------------------------------------------

IMAGES_HEADER = (
    "S. No.,Product Name,Position,Input Image Url,Output Image Url,Status,Error Code,"
    "Error Message,Input Bytes,Output Bytes,Saved Percent,Width,Height,Format,Quality"
)


def images_csv(svc: Service, rid: str) -> tuple[str, list[dict[str, str]]]:
    code, headers, raw = http("GET", f"{svc.url}/api/requests/{rid}/images.csv")
    assert code == 200, raw
    assert headers["content-type"].startswith("text/csv")
    assert f"imgbatch-{rid}-images.csv" in headers["content-disposition"]
    text = raw.decode("utf-8")
    return text.split("\r\n", 1)[0], list(csv.DictReader(io.StringIO(text)))


def test_images_csv_has_one_row_per_image_at_any_time(
    svc: Service, image_server: ImageServer
) -> None:
    products = [
        [image_server.url("/slow?seconds=2&file=photo2.jpg"), image_server.url("/nope.png")],
        [image_server.url("/photo.webp")],
    ]
    status, answer = svc.upload(
        csv_bytes(products).replace(b"Product 2", b"=HYPERLINK(1)"), quality="60"
    )
    assert status == 202, answer
    rid = answer["request_id"]
    header, early = images_csv(svc, rid)  # before it is finished: the current state
    assert header == IMAGES_HEADER
    assert [r["Status"] for r in early][:1] in (["pending"], ["processing"])
    assert early[0]["Output Bytes"] == "" and early[0]["Quality"] == ""

    doc = svc.wait_final(rid)
    header, rows = images_csv(svc, rid)
    assert header == IMAGES_HEADER
    assert [(r["S. No."], r["Position"]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "1")]
    assert [r["Input Image Url"] for r in rows] == [u for urls in products for u in urls]
    assert rows[2]["Product Name"] == "'=HYPERLINK(1)"  # formula-escaped like output.csv

    images = [i for p in doc["products"] for i in p["images"]]
    slow, missing, webp = rows
    for row, image in ((slow, images[0]), (webp, images[2])):
        assert row["Status"] == "done" and row["Output Image Url"] == image["output_url"]
        assert int(row["Input Bytes"]) == image["bytes_in"]
        assert int(row["Output Bytes"]) == image["bytes_out"]
        saved = 100 * (image["bytes_in"] - image["bytes_out"]) / image["bytes_in"]
        assert row["Saved Percent"] == f"{saved:.1f}"
        assert (row["Width"], row["Height"]) == (str(image["width"]), str(image["height"]))
        assert row["Format"] == image["format"] and row["Quality"] == "60"
        assert row["Error Code"] == row["Error Message"] == ""
    assert webp["Format"] == "webp"
    assert missing["Status"] == "failed" and missing["Error Code"] == "not_found"
    assert "404" in missing["Error Message"]
    assert all(missing[c] == "" for c in ("Output Image Url", "Input Bytes", "Saved Percent"))

    code, _, raw = http("GET", f"{svc.url}/api/requests/{'0' * 32}/images.csv")
    assert code == 404 and b'"not_found"' in raw


# --- resizing ------------------------------------------------------------------------------------


def landmark_photo() -> Image.Image:
    """800x600, dark on the left and bright on the right, so a wrong turn shows."""
    y, x = np.mgrid[0:600, 0:800]
    grey = 40 + 180 * (x / 800) + 10 * np.sin(y / 9)
    return Image.fromarray(np.dstack([grey, grey * 0.8, grey * 0.6]).astype(np.uint8))


def oriented(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif


@pytest.fixture(scope="module")
def resize_files(image_dir: Path) -> dict[str, Path]:
    """JPEG, PNG and WebP, each plain and with EXIF orientation 6 (shown as 600x800)."""
    im = landmark_photo()
    files = {}
    for fmt, ext, params in (
        ("JPEG", "jpg", {"quality": 92}),
        ("PNG", "png", {}),
        ("WEBP", "webp", {"quality": 90}),
    ):
        for turned in (False, True):
            path = image_dir / f"resize-{'turned' if turned else 'plain'}.{ext}"
            out = io.BytesIO()
            im.save(out, fmt, **params, **({"exif": oriented(6)} if turned else {}))
            path.write_bytes(out.getvalue())
            files[path.name] = path
    return files


def test_resize_jpeg_png_webp_with_and_without_exif_rotation(
    svc: Service, image_server: ImageServer, resize_files: dict[str, Path]
) -> None:
    names = sorted(resize_files)
    status, answer = svc.upload(
        csv_bytes([[image_server.url(f"/{n}") for n in names]]), max_width="300", max_height="300"
    )
    assert status == 202, answer
    doc = svc.wait_final(answer["request_id"])
    assert doc["status"] == "completed"
    assert doc["options"] == {"quality": 50, "format": "keep", "max_width": 300, "max_height": 300}
    for name, image in zip(names, doc["products"][0]["images"], strict=True):
        turned = "turned" in name
        expected = (225, 300) if turned else (300, 225)
        assert (image["width"], image["height"]) == expected, name
        extension = name.rsplit(".", 1)[1]
        assert image["format"] == {"jpg": "jpeg", "png": "png", "webp": "webp"}[extension]
        code, _, data = http("GET", image["output_url"])
        assert code == 200 and len(data) == image["bytes_out"]
        out = Image.open(io.BytesIO(data))
        assert out.size == expected
        assert ExifTags.Base.Orientation not in out.getexif()
        # orientation 6 shows the left edge at the top: the dark side is up, not left
        grey = np.asarray(out.convert("L"), float)
        if turned:
            assert grey[:20].mean() + 60 < grey[-20:].mean()
        else:
            assert grey[:, :20].mean() + 60 < grey[:, -20:].mean()


def test_resize_options_as_query_parameters(svc: Service, image_server: ImageServer) -> None:
    body = csv_bytes([[image_server.url("/photo3.jpg")]])
    code, _, raw = http(
        "POST",
        f"{svc.url}/api/upload?max_height=120",
        body,
        {"Content-Type": "text/csv"},
    )
    assert code == 202, raw
    doc = svc.wait_final(json.loads(raw)["request_id"])
    image = doc["products"][0]["images"][0]
    assert (image["width"], image["height"]) == (160, 120)
    assert doc["options"]["max_height"] == 120 and doc["options"]["max_width"] is None


# --- quality=auto ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def contrasting_files(image_dir: Path) -> tuple[str, str]:
    y, x = np.mgrid[0:600, 0:800]
    shade = 180 + 30 * np.exp(-((x - 400) ** 2 + (y - 300) ** 2) / 2e5)
    flat = np.dstack([shade, shade * 0.55, shade * 0.35]).astype(np.uint8)
    rng = np.random.default_rng(3)
    weave = 128 + 60 * np.sign(np.sin(x * 1.9) * np.sin(y * 1.7)) + rng.normal(0, 25, x.shape)
    busy = np.dstack([weave, weave * 0.9, weave * 0.8]).clip(0, 255).astype(np.uint8)
    for name, pixels in (("auto-flat.jpg", flat), ("auto-fabric.jpg", busy)):
        Image.fromarray(pixels).save(image_dir / name, quality=95)
    return "auto-flat.jpg", "auto-fabric.jpg"


def test_quality_auto_picks_less_for_flat_colour_than_for_texture(
    svc: Service, image_server: ImageServer, contrasting_files: tuple[str, str]
) -> None:
    flat, fabric = contrasting_files
    rid = submit(
        svc, [[image_server.url(f"/{flat}")], [image_server.url(f"/{fabric}")]], quality="auto"
    )
    doc = svc.wait_final(rid)
    assert doc["status"] == "completed" and doc["options"]["quality"] == "auto"
    (flat_image,), (fabric_image,) = (p["images"] for p in doc["products"])
    assert isinstance(flat_image["quality"], int) and isinstance(fabric_image["quality"], int)
    assert 30 <= flat_image["quality"] < fabric_image["quality"] <= 95
    assert flat_image["bytes_out"] < flat_image["bytes_in"]
    _, rows = images_csv(svc, rid)
    assert [r["Quality"] for r in rows] == [
        str(flat_image["quality"]),
        str(fabric_image["quality"]),
    ]


# --- bad values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_width", "0"),
        ("max_width", "16385"),
        ("max_height", "abc"),
        ("max_height", "1.5"),
        ("max_width", "-3"),
        ("quality", "best"),
        ("quality", "0"),
        ("quality", "101"),
    ],
)
def test_bad_option_values_are_refused(
    svc: Service, image_server: ImageServer, field: str, value: str
) -> None:
    body = csv_bytes([[image_server.url("/photo0.jpg")]])
    status, answer = svc.upload(body, **{field: value})
    assert status == 400, answer
    assert answer["error"]["code"] == "bad_field" and field in answer["error"]["message"]
    code, _, raw = http(
        "POST", f"{svc.url}/api/upload?{field}={value}", body, {"Content-Type": "text/csv"}
    )
    assert code == 400 and b'"bad_field"' in raw


# --- defaults from the environment and the command line's summary ----------------------------------


def test_defaults_from_the_environment_and_the_submit_summary(
    tmp_path: Path, image_server: ImageServer, contrasting_files: tuple[str, str]
) -> None:
    env = {"IMGBATCH_DEFAULT_QUALITY": "auto", "IMGBATCH_DEFAULT_MAX_WIDTH": "200"}
    with Service(tmp_path / "data", env=env) as service:
        service.start(workers=1, concurrency=1)
        csv_file = tmp_path / "products.csv"
        csv_file.write_bytes(
            csv_bytes(
                [[image_server.url(f"/{contrasting_files[0]}")], [image_server.url("/gone.jpg")]]
            )
        )
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "imgbatch",
                "submit",
                str(csv_file),
                "--wait",
                "--server",
                service.url,
                "--output",
                str(tmp_path / "out.csv"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=service.env,
            check=False,
        )
        assert run.returncode == 2, run.stderr  # completed_with_errors
        rid = run.stdout.splitlines()[0].strip()
        doc = service.status(rid)
    assert doc["options"] == {
        "quality": "auto",
        "format": "keep",
        "max_width": 200,
        "max_height": None,
    }
    image = doc["products"][0]["images"][0]
    assert (image["width"], image["height"]) == (200, 150) and isinstance(image["quality"], int)
    lines = run.stdout.splitlines()
    savings = doc["savings"]
    assert "images: 1 done, 1 failed" in lines
    assert any(
        line.startswith("bytes: ") and f"{savings['saved_percent']:.1f} % saved" in line
        for line in lines
    )
    failed = [line for line in lines if line.startswith("failed: ")]
    assert failed == [
        f"failed: S. No. 2 {image_server.url('/gone.jpg')} not_found: "
        + doc["products"][1]["images"][0]["error"]["message"]
    ]
