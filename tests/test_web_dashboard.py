"""The dashboard in a real browser (Debian's Chromium through Playwright) against the real
service and a real loopback image host: upload, live progress, thumbnails, savings equal to
the API's, failure reasons, before/after, history, retry, cancel, delete, downloads, paging,
a narrow window and the keyboard. Every page is watched for console errors.

One service and one image host serve the whole module, so the browser tests stay fast.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from rich.filesize import decimal

from conftest import encode, photo
from support.browser import ConsoleWatch, screenshot
from support.imageserver import ImageServer
from support.service import Service, http, products_csv

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
TIMES, MINUS, DASH = "\u00d7", "\u2212", "\u2013"  # as the page writes them
FINAL_SELECTOR = "#summary[data-status={status}]"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    root = tmp_path_factory.mktemp("web-images")
    for i in range(4):
        (root / f"p{i}.jpg").write_bytes(encode(photo(900, 600, seed=i), "JPEG", quality=92))
    rgba = photo(400, 300, seed=7).convert("RGBA")
    rgba.putalpha(200)
    (root / "alpha.png").write_bytes(encode(rgba, "PNG"))
    for example in (EXAMPLES / "images").iterdir():
        shutil.copy(example, root / example.name)
    with ImageServer(root) as server:
        yield server


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with Service(tmp_path_factory.mktemp("web-service")) as service:
        service.start(workers=1, concurrency=2)
        yield service


@pytest.fixture
def watch(page: Page) -> Iterator[ConsoleWatch]:
    watcher = ConsoleWatch().attach(page)
    yield watcher
    assert watcher.unexpected() == []


def write_csv(
    tmp_path: Path, rows: list[tuple[str, list[str]]], name: str = "products.csv"
) -> Path:
    path = tmp_path / name
    path.write_bytes(products_csv(rows))
    return path


def upload(page: Page, svc: Service, csv_path: Path, **options: str) -> str:
    """Upload through the page's form; returns the request id the page navigated to."""
    page.goto(svc.url + "/")
    page.set_input_files("#file", str(csv_path))
    for name, value in options.items():
        if name == "format":
            page.select_option("#format", value)
        else:
            page.fill(f"#{name}", value)
    page.click("#submit")
    page.wait_for_url(re.compile(r"/requests/[0-9a-f]{32}$"))
    return page.url.rsplit("/", 1)[1]


def wait_status(page: Page, status: str, timeout: float = 60_000) -> None:
    page.wait_for_selector(FINAL_SELECTOR.format(status=status), timeout=timeout)


def thumbnails_rendered(page: Page) -> list[int]:
    """naturalWidth of every output thumbnail once each has loaded (lazy: scrolled into view)."""
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function(
        "() => [...document.querySelectorAll('figure.done img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    widths: list[int] = page.eval_on_selector_all(
        "figure.done img", "images => images.map(i => i.naturalWidth)"
    )
    return widths


def api(svc: Service, path: str) -> Any:
    status, _, raw = http("GET", svc.url + path)
    assert status == 200, raw
    return json.loads(raw)


# --- upload, progress, thumbnails, savings, reasons, reload ----------------------------------


def test_upload_shows_progress_thumbnails_savings_and_reasons(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    rows = [
        ("Linen shirt", [images.url("p0.jpg"), images.url("p1.jpg")]),
        ("Canvas tote", [images.url("alpha.png")]),
        ("Wool scarf", [images.url("p2.jpg"), images.url("gone.jpg")]),
    ]
    request_id = upload(page, svc, write_csv(tmp_path, rows), quality="60", max_width="600")
    expect(page.locator("#progress")).to_be_visible()
    wait_status(page, "completed_with_errors")

    doc = svc.status(request_id)
    savings = doc["savings"]
    stats = page.locator(".stat .big")
    expect(stats.nth(0)).to_have_text(f"{savings['saved_percent']:.1f}%")
    expect(stats.nth(1)).to_have_text(
        f"{decimal(savings['bytes_in'])} → {decimal(savings['bytes_out'])}"
    )
    expect(stats.nth(2)).to_have_text("4 of 5 done")
    expect(page.locator("#progress")).to_have_attribute("value", "100")
    expect(page.locator("#options")).to_have_text(
        f"Options: quality 60 · format keep · fit 600 {TIMES} any px"
    )

    assert thumbnails_rendered(page) == [
        image["width"]
        for product in doc["products"]
        for image in product["images"]
        if image["status"] == "done"
    ]
    # Per image: dimensions (scaled to fit 600 px), bytes in → out and % saved, as the API says.
    first = doc["products"][0]["images"][0]
    card = page.locator("figure.done").first
    assert (first["width"], first["height"]) == (600, 400)
    expect(card.locator(".dims")).to_contain_text(f"{first['width']} {TIMES} {first['height']}")
    expect(card.locator(".sizes")).to_have_text(
        f"{decimal(first['bytes_in'])} → {decimal(first['bytes_out'])}"
    )
    saved = round(1000 * (first["bytes_in"] - first["bytes_out"]) / first["bytes_in"]) / 10
    expect(card.locator(".saved")).to_have_text(f"{MINUS}{saved:.1f}% saved")

    failed = page.locator("figure.failed")
    expect(failed).to_have_count(1)
    expect(failed.locator(".reason")).to_have_text(
        "The image is not there (the host answered “not found”)."
    )
    expect(failed).to_contain_text("not_found")
    expect(failed).to_contain_text(images.url("gone.jpg"))
    screenshot(page, "request-page.png")

    # A reload (or a shared link) shows the same request.
    page.reload()
    wait_status(page, "completed_with_errors")
    expect(page.locator("#request-title")).to_have_text("products.csv")  # the upload's name
    expect(page.locator("#summary")).to_contain_text(request_id)
    expect(page.locator("figure.image")).to_have_count(5)


def test_products_are_paged_and_the_page_survives_a_reload(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    rows = [(f"Sock {n}", [images.url(f"p{n % 4}.jpg")]) for n in range(45)]
    upload(page, svc, write_csv(tmp_path, rows))
    wait_status(page, "completed")
    expect(page.locator("li.product")).to_have_count(20)
    expect(page.locator("#range")).to_have_text(f"Products 1{DASH}20 of 45")
    page.click("#next-page")
    expect(page.locator("#range")).to_have_text(f"Products 21{DASH}40 of 45")
    expect(page.locator("li.product").first).to_have_attribute("data-serial", "21")
    assert page.url.endswith("?page=2")
    page.reload()
    expect(page.locator("#range")).to_have_text(f"Products 21{DASH}40 of 45")
    page.fill("#page-number", "3")
    page.press("#page-number", "Enter")
    expect(page.locator("#range")).to_have_text(f"Products 41{DASH}45 of 45")
    expect(page.locator("li.product")).to_have_count(5)


def test_drag_and_drop_and_a_bad_csv_shows_its_errors_and_keeps_the_form(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer
) -> None:
    watch.expect(422, "/api/upload")
    page.goto(svc.url + "/")
    page.fill("#quality", "auto")
    page.select_option("#format", "webp")
    page.fill("#max_width", "1200")
    page.fill("#webhook_url", images.url("hooks/imgbatch"))  # loopback: no DNS lookup
    bad = "S. No.,Product Name,Input Image Urls\nx,,ftp://a.example/1.jpg\n2,Mug,https://a.example/2.jpg\n"
    transfer = page.evaluate_handle(
        """csv => { const dt = new DataTransfer();
                    dt.items.add(new File([csv], 'bad.csv', { type: 'text/csv' })); return dt; }""",
        bad,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    expect(page.locator("#chosen")).to_have_text("Selected: bad.csv")
    page.click("#submit")
    rows = page.locator("#upload-result table.errors tbody tr")
    expect(rows).to_have_count(3)
    cells = [[cell.strip() for cell in row.split("\t")] for row in rows.all_inner_texts()]
    assert [c[:2] for c in cells] == [
        ["2", "S. No."],
        ["2", "Product Name"],
        ["2", "Input Image Urls"],
    ]
    assert "ftp://a.example/1.jpg" in cells[2][2]
    # Nothing else is lost from the form.
    assert page.input_value("#quality") == "auto"
    assert page.input_value("#format") == "webp"
    assert page.input_value("#max_width") == "1200"
    assert page.input_value("#webhook_url") == images.url("hooks/imgbatch")
    assert page.eval_on_selector("#file", "f => f.files[0].name") == "bad.csv"


# --- before / after ----------------------------------------------------------------------------


def _csp(headers: dict[str, str]) -> dict[str, str]:
    value = next(v for k, v in headers.items() if k.lower() == "content-security-policy")
    directives = (d.strip() for d in value.split(";"))
    return {name: rest for name, _, rest in (d.partition(" ") for d in directives if d)}


def test_before_after_fetches_the_input_only_in_its_own_view(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    rows = [("Cat calendar", [images.url("chelsea.jpg")])]
    request_id = upload(page, svc, write_csv(tmp_path, rows))
    wait_status(page, "completed")
    thumbnails_rendered(page)
    # The request page never loads an input: the worker's download is the only GET so far,
    # and the page's policy would not allow the image host anyway.
    assert images.requests.count("/chelsea.jpg") == 1
    origin = images.base_url
    assert origin not in _csp(http("GET", page.url)[1])["img-src"]

    page.click("text=Before / after")
    page.wait_for_url(f"**/requests/{request_id}/compare/1/1")
    page.wait_for_function(
        "() => ['before', 'after'].every(id => document.getElementById(id)?.naturalWidth > 0)"
    )
    assert images.requests.count("/chelsea.jpg") == 2  # fetched by the browser, on opening
    csp = _csp(http("GET", page.url)[1])
    assert origin in csp["img-src"].split() and "'unsafe-inline'" not in csp["script-src"]
    doc = svc.status(request_id)["products"][0]["images"][0]
    expect(page.locator("figure").nth(1)).to_contain_text(decimal(doc["bytes_out"]))
    # Another image's origin is never granted by a crafted link: unknown positions get none.
    assert (
        origin
        not in _csp(http("GET", f"{svc.url}/requests/{request_id}/compare/1/9")[1])["img-src"]
    )
    page.click("text=← Back to the request")
    wait_status(page, "completed")


# --- history -----------------------------------------------------------------------------------


def test_history_lists_requests_newest_first_with_a_status_filter(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    good = upload(page, svc, write_csv(tmp_path, [("Mug", [images.url("coffee.jpg")])], "mugs.csv"))
    wait_status(page, "completed")
    bad = upload(
        page, svc, write_csv(tmp_path, [("Ghost", [images.url("nope.jpg")])], "ghosts.csv")
    )
    wait_status(page, "failed")
    page.click("text=History & upload")
    rows = page.locator("#history-rows tr")
    expect(rows.first).to_have_attribute("data-request", bad)
    expect(rows.nth(1)).to_have_attribute("data-request", good)
    expect(rows.first).to_contain_text("ghosts.csv")
    expect(rows.nth(1)).to_contain_text("mugs.csv")
    saved = svc.status(good)["savings"]["saved_percent"]
    expect(rows.nth(1)).to_contain_text(f"{saved:.1f}%")
    page.select_option("#status-filter", "failed")
    expect(page.locator(f"#history-rows tr[data-request='{good}']")).to_have_count(0)
    expect(page.locator(f"#history-rows tr[data-request='{bad}']")).to_have_count(1)
    assert "status=failed" in page.url
    page.reload()
    expect(page.locator("#status-filter")).to_have_value("failed")
    screenshot(page, "history.png")
    page.click(f"#history-rows tr[data-request='{bad}'] a")
    page.wait_for_url(f"**/requests/{bad}")
    wait_status(page, "failed")


def test_history_pages_and_goes_live_while_a_request_runs(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer
) -> None:
    newest = []
    for n in range(21):  # more than a page of history, through the API
        status, body = svc.upload(products_csv([(f"Cup {n}", [images.url("p1.jpg")])]))
        assert status == 202
        newest.insert(0, body["request_id"])
    page.goto(svc.url + "/")
    rows = page.locator("#history-rows tr")
    expect(rows).to_have_count(20)
    expect(rows.first).to_have_attribute("data-request", newest[0])
    expect(page.locator("#newer")).to_be_hidden()
    page.click("#older")
    expect(rows.first).to_have_attribute("data-request", newest[20])
    assert "cursor=" in page.url
    page.click("#newer")
    expect(rows.first).to_have_attribute("data-request", newest[0])
    # Live: a running request's row moves on its own until it is final.
    slow = [(f"Slow {n}", [images.url(f"slow?seconds=1&file=p2.jpg&h={n}")]) for n in range(4)]
    status, body = svc.upload(products_csv(slow))
    assert status == 202
    page.reload()
    row = page.locator(f"#history-rows tr[data-request='{body['request_id']}']")
    expect(page.locator("#history-live")).to_have_text("Updating live…")
    expect(row.locator(".badge")).to_have_text("Completed", timeout=30_000)
    expect(row.locator("progress")).to_have_attribute("value", "100")
    expect(page.locator("#history-live")).to_have_text("")


# --- retry, cancel, delete, downloads ------------------------------------------------------------------


def test_retry_brings_a_failed_image_back(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    late = images.directory / "late.jpg"
    late.unlink(missing_ok=True)
    rows = [("Belt", [images.url("p3.jpg"), images.url("late.jpg")])]
    upload(page, svc, write_csv(tmp_path, rows))
    wait_status(page, "completed_with_errors")
    late.write_bytes((images.directory / "p1.jpg").read_bytes())  # the host has it now
    page.click("#retry")
    wait_status(page, "completed")
    expect(page.locator("figure.failed")).to_have_count(0)
    assert len(thumbnails_rendered(page)) == 2


def test_cancel_with_confirmation(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    slow = [images.url(f"slow?seconds=1&file=p{n % 4}.jpg&n={n}") for n in range(24)]
    request_id = upload(
        page, svc, write_csv(tmp_path, [(f"Slow {n}", [u]) for n, u in enumerate(slow)])
    )
    page.click("#cancel")
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-no")  # "keep running" changes nothing
    expect(page.locator("#confirm")).to_have_count(0)
    assert svc.status(request_id)["status"] in ("pending", "processing")
    page.click("#cancel")
    page.click("#confirm-yes")
    wait_status(page, "cancelled")
    doc = svc.status(request_id)
    assert doc["status"] == "cancelled" and doc["progress"]["succeeded"] < 24
    cancelled = doc["progress"]["cancelled"]
    assert cancelled > 0
    expect(page.locator(".stat").nth(2)).to_contain_text(f"{cancelled} cancelled")
    expect(page.locator("#retry")).to_have_text("Retry failed and cancelled images")
    shown = page.locator("figure.cancelled")
    expect(shown.first).to_contain_text("Not processed: the request was cancelled.")
    screenshot(page, "cancelled-request.png")


def test_delete_with_confirmation(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    request_id = upload(page, svc, write_csv(tmp_path, [("Mug", [images.url("p0.jpg")])]))
    wait_status(page, "completed")
    page.click("#delete")
    page.click("#confirm-no")
    expect(page.locator("#confirm")).to_have_count(0)
    assert http("GET", f"{svc.url}/api/status/{request_id}")[0] == 200
    page.click("#delete")
    page.click("#confirm-yes")
    page.wait_for_url(svc.url + "/")
    expect(page.locator("#flash")).to_contain_text("was deleted")
    assert http("GET", f"{svc.url}/api/status/{request_id}")[0] == 404


def test_downloads_arrive(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    rows = [("Poster", [images.url("astronaut.jpg"), images.url("rocket.jpg")])]
    request_id = upload(page, svc, write_csv(tmp_path, rows))
    wait_status(page, "completed")
    base = f"{svc.url}/api/requests/{request_id}"
    for label, path in (
        ("Output CSV", "output.csv"),
        ("images.csv", "images.csv"),
        ("Images (ZIP)", "images.zip"),
    ):
        with page.expect_download() as info:
            page.click(f"#actions a:has-text('{label}')")
        saved = tmp_path / f"download-{path}"
        info.value.save_as(saved)
        status, _, expected = http("GET", f"{base}/{path}")
        assert status == 200 and saved.read_bytes() == expected, label
    rows_out = list(csv.reader(io.StringIO((tmp_path / "download-images.csv").read_text())))
    assert len(rows_out) == 3


# --- narrow window, keyboard, labels --------------------------------------------------------------


def test_phone_width_keyboard_and_labels(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    page.set_viewport_size({"width": 375, "height": 740})
    rows = [("Coffee mug", [images.url("coffee.jpg"), images.url("coffee-overlay.png")])]
    upload(page, svc, write_csv(tmp_path, rows))
    wait_status(page, "completed")
    for path in ("/", page.url.removeprefix(svc.url)):
        page.goto(svc.url + path)
        page.wait_for_selector("#view h1, #view h2")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input, select, textarea')]
                 .filter(c => c.type !== 'hidden' && !c.closest('[hidden]'))
                 .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label'))
                 .map(c => c.id || c.name)"""
        )
        assert unlabelled == [], path
    # The keyboard alone reaches the before/after view.
    page.wait_for_selector("figure.done a")
    page.focus("body")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.startsWith('Before / after')"):
            break
    else:
        pytest.fail("Tab never reached the before/after link")
    page.keyboard.press("Enter")
    page.wait_for_url("**/compare/1/1")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    screenshot(page, "compare-phone.png")


# --- API keys -----------------------------------------------------------------------------------


def test_api_keys_a_clear_401_then_success_with_the_key(
    page: Page,
    watch: ConsoleWatch,
    images: ImageServer,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    watch.expect(401, "/api/")
    env = {"IMGBATCH_API_KEYS": "key-one,key-two"}
    with Service(tmp_path_factory.mktemp("web-keys"), env=env) as keyed:
        keyed.start(workers=1, concurrency=1)
        page.goto(keyed.url + "/")
        expect(page.locator("#keyform")).to_be_visible()  # /readyz says keys are required
        page.set_input_files("#file", str(write_csv(tmp_path, [("Mug", [images.url("p0.jpg")])])))
        page.click("#submit")
        expect(page.locator("#keymessage")).to_have_text(
            "This service needs an API key: enter yours above (kept for this tab only)."
        )
        page.fill("#apikey", "not-a-key")
        page.click("#keyform button[type=submit]")
        page.click("#submit")
        expect(page.locator("#keymessage")).to_have_text(
            "The API key was refused (invalid API key). Enter a valid key above."
        )
        page.fill("#apikey", "key-two")
        page.press("#apikey", "Enter")
        expect(page.locator("#keymessage")).to_be_hidden()
        page.click("#submit")
        page.wait_for_url(re.compile(r"/requests/[0-9a-f]{32}$"))
        request_id = page.url.rsplit("/", 1)[1]
        wait_status(page, "completed")
        assert len(thumbnails_rendered(page)) == 1  # stored files need no key
        assert page.evaluate("sessionStorage.getItem('imgbatch.apiKey')") == "key-two"
        page.reload()  # the key stays for the tab
        wait_status(page, "completed")
        # Downloads carry the key (through fetch), and arrive.
        with page.expect_download() as info:
            page.click("#actions a:has-text('Output CSV')")
        info.value.save_as(tmp_path / "out.csv")
        _, _, expected = http(
            "GET",
            f"{keyed.url}/api/requests/{request_id}/output.csv",
            headers={"Authorization": "Bearer key-two"},
        )
        assert (tmp_path / "out.csv").read_bytes() == expected
        with page.expect_download() as info:
            page.click("#actions a:has-text('Images (ZIP)')")
        info.value.save_as(tmp_path / "images.zip")
        with zipfile.ZipFile(tmp_path / "images.zip") as archive:
            assert sorted(archive.namelist())[-1] == "output.csv" and len(archive.namelist()) == 2
        # Another key's request is not found, and says so in words.
        page.fill("#apikey", "key-one")
        page.press("#apikey", "Enter")
        expect(page.locator("#request-title")).to_have_text("Request not found")
        watch.expect(404, f"/api/status/{request_id}")


# --- the README's screenshot ----------------------------------------------------------------------


def test_screenshot_of_the_example_request(
    page: Page, watch: ConsoleWatch, svc: Service, images: ImageServer, tmp_path: Path
) -> None:
    """The quick-start demo (examples/products.csv) as the README shows it.

    Saved under artifacts/ every run; IMGBATCH_UPDATE_DOCS_SCREENSHOT=1 also refreshes
    docs/dashboard.png, the one committed.
    """
    example = (
        (EXAMPLES / "products.csv").read_text().replace("http://127.0.0.1:9000", images.base_url)
    )
    (tmp_path / "products.csv").write_text(example)
    page.set_viewport_size({"width": 1100, "height": 900})
    upload(page, svc, tmp_path / "products.csv")
    wait_status(page, "completed_with_errors")
    thumbnails_rendered(page)
    page.evaluate("window.scrollTo(0, 0)")
    path = screenshot(page, "example-request.png")
    assert path.stat().st_size > 10_000
    if os.environ.get("IMGBATCH_UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(path, DOCS_SCREENSHOT)
