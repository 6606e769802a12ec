"""The product CSV contract: what is accepted, what is refused and how, and the output CSV."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import random
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator

import pytest

from imgbatch.catalogue import (
    OUTPUT_HEADER,
    CsvIssue,
    CsvLimits,
    CsvRejected,
    OutputRow,
    ProductRow,
    escape_cell,
    iter_output_csv,
    parse_products,
)

HEADER = "S. No.,Product Name,Input Image Urls"
SERIAL, NAME, URLS = "S. No.", "Product Name", "Input Image Urls"
A, B, C = (
    "https://img.example.com/a.jpg",
    "http://img.example.com/b.png",
    "https://cdn.example.org/c",
)


def csv_bytes(*lines: str, header: str = HEADER, end: str = "\n") -> bytes:
    return (end.join([header, *lines]) + end).encode()


def rejected(data: bytes, limits: CsvLimits | None = None) -> CsvRejected:
    with pytest.raises(CsvRejected) as info:
        parse_products(data, limits or CsvLimits())
    return info.value


def issue_at(exc: CsvRejected, row: int, column: str | None) -> CsvIssue:
    matches = [issue for issue in exc.issues if issue.row == row and issue.column == column]
    assert matches, f"no issue at row {row}, column {column}: {exc.issues}"
    return matches[0]


# --- accepted input ----------------------------------------------------------------


def test_parses_rows_with_spreadsheet_row_numbers() -> None:
    data = csv_bytes(f'1,Shirt,"{A},{B}"', f"2,Trousers,{C}")
    assert parse_products(data) == [
        ProductRow(row=2, serial_number=1, product_name="Shirt", urls=(A, B)),
        ProductRow(row=3, serial_number=2, product_name="Trousers", urls=(C,)),
    ]


@pytest.mark.parametrize(
    "serial_header",
    ["S. No.", "S.No", "Sr. No.", "Serial Number", "Serial No", "sno", "SRNO", " s. no. ", "SR NO"],
)
def test_serial_header_spellings(serial_header: str) -> None:
    data = csv_bytes(f"1,Shirt,{A}", header=f"{serial_header},Product Name,Input Image Urls")
    assert parse_products(data)[0].serial_number == 1


@pytest.mark.parametrize(
    "url_header",
    ["Input Image Urls", "Input Image URLs", "Image Urls", "input image urls", "IMAGEURLS"],
)
@pytest.mark.parametrize(
    "name_header", ["Product Name", "PRODUCT NAME", "product  name", "ProductName"]
)
def test_name_and_url_header_spellings(name_header: str, url_header: str) -> None:
    data = csv_bytes(f"1,Shirt,{A}", header=f"S. No.,{name_header},{url_header}")
    assert parse_products(data)[0].urls == (A,)


def test_utf8_bom_is_tolerated() -> None:
    data = b"\xef\xbb\xbf" + csv_bytes(f"1,Shirt,{A}")
    assert parse_products(data)[0].product_name == "Shirt"


def test_crlf_line_ends_are_tolerated() -> None:
    data = csv_bytes(f"1,Shirt,{A}", f'2,Hat,"{B},{C}"', end="\r\n")
    rows = parse_products(data)
    assert [(r.row, r.product_name, r.urls) for r in rows] == [
        (2, "Shirt", (A,)),
        (3, "Hat", (B, C)),
    ]


def test_trailing_blank_lines_are_tolerated() -> None:
    data = csv_bytes(f"1,Shirt,{A}") + b"\n\r\n   \n,,\n"
    assert len(parse_products(data)) == 1


def test_blank_rows_in_the_middle_are_skipped_but_still_counted() -> None:
    data = csv_bytes(f"1,Shirt,{A}", "", ",,", f"2,Hat,{B}")
    assert [r.row for r in parse_products(data)] == [2, 5]


def test_surrounding_whitespace_is_stripped_in_cells_and_header() -> None:
    header = "  S. No. ,  Product Name  ,Input Image Urls   "
    data = csv_bytes(f'  7 ,  Blue Shirt  ,  "  {A} ,  {B}  "   ', header=header)
    assert parse_products(data) == [ProductRow(2, 7, "Blue Shirt", (A, B))]


def test_trailing_comma_and_newline_inside_the_url_cell_are_ignored() -> None:
    data = csv_bytes(f'1,Shirt,"{A},\n{B},"')
    assert parse_products(data)[0].urls == (A, B)


def test_quoted_name_with_comma_quote_and_newline() -> None:
    data = csv_bytes(f'1,"Shirt, ""blue""\nlarge",{A}', f"2,Hat,{B}")
    rows = parse_products(data)
    assert rows[0].product_name == 'Shirt, "blue"\nlarge'
    assert rows[1].row == 3  # a multi-line cell is still one spreadsheet row


def test_unicode_names_and_hosts_are_kept() -> None:
    data = csv_bytes("1,Chemise bleue — été ☀,https://bücher.example/ü.jpg")
    row = parse_products(data)[0]
    assert row.product_name == "Chemise bleue — été ☀"
    assert row.urls == ("https://bücher.example/ü.jpg",)


def test_spilled_urls_are_accepted_when_every_extra_cell_is_a_url() -> None:
    data = csv_bytes(f"1,Shirt,{A},{B},{C},,", f"2,Hat,{B}, {C}")
    rows = parse_products(data)
    assert rows[0].urls == (A, B, C)
    assert rows[1].urls == (B, C)


@pytest.mark.parametrize(
    "line",
    [
        f"1,Shirt,{A},blue",  # a fourth column that is not a URL
        f"1,Shirt,{A},,{B}",  # an empty cell between spilled URLs is not trailing
        f"1,Shirt,{A},{B},42",
    ],
)
def test_spilled_cells_that_are_not_urls_are_rejected(line: str) -> None:
    exc = rejected(csv_bytes(line))
    assert (exc.status, exc.code) == (422, "validation_failed")
    assert "quoted" in issue_at(exc, 2, URLS).message


@pytest.mark.parametrize(("cell", "expected"), [("1.", 1), ("1.0", 1), (" 42. ", 42), ("007", 7)])
def test_serial_numbers_may_end_with_a_dot(cell: str, expected: int) -> None:
    assert parse_products(csv_bytes(f"{cell},Shirt,{A}"))[0].serial_number == expected


@pytest.mark.parametrize(
    "cell", ["abc", "1.5", "-1", "+1", "1e3", "1,000", "", "\u0661", "1_000", "9" * 19, "0x1f"]
)
def test_bad_serial_numbers_are_reported(cell: str) -> None:
    line = f'"{cell}",Shirt,{A}'
    exc = rejected(csv_bytes(line))
    assert exc.code == "validation_failed"
    assert "whole number" in issue_at(exc, 2, SERIAL).message


def test_duplicate_serials_name_both_rows() -> None:
    exc = rejected(csv_bytes(f"5,Shirt,{A}", f"6,Hat,{B}", f"5.,Sock,{C}", f"5,Tie,{C}"))
    assert issue_at(exc, 4, SERIAL).message == "S. No. 5 appears in rows 2 and 4."
    assert issue_at(exc, 5, SERIAL).message == "S. No. 5 appears in rows 2 and 5."
    assert len(exc.issues) == 2


def test_duplicate_is_reported_even_when_the_first_row_has_other_errors() -> None:
    exc = rejected(csv_bytes(f"5,,{A}", f"5,Hat,{B}"))
    assert issue_at(exc, 2, NAME)
    assert "rows 2 and 3" in issue_at(exc, 3, SERIAL).message


@pytest.mark.parametrize("name", ['""', '"   "', ""])
def test_empty_product_names_are_rejected(name: str) -> None:
    exc = rejected(csv_bytes(f"1,{name},{A}"))
    assert issue_at(exc, 2, NAME).message == "Product Name is empty."


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://img.example.com/a.jpg", "http"),
        ("images/a.jpg", "http"),
        ("/images/a.jpg", "http"),
        ("//img.example.com/a.jpg", "http"),
        ("javascript:alert(1)", "http"),
        ("JavaScript://%0aalert(1)", "http"),
        ("file:///etc/passwd", "http"),
        ("mailto:a@example.com", "http"),
        ("http://", "host"),
        ("http:///a.jpg", "host"),
        ("https://:443/a.jpg", "host"),
        ("http://img.example.com:99999/a.jpg", "valid"),
        ("http://[::1/a.jpg", "valid"),
        ("http://img.example.com/a b.jpg", "whitespace"),
        ("http://img.example.com/a\tb.jpg", "whitespace"),
        ("http://img.example.com/a\u200bb.jpg", "whitespace"),
        ("http://img.example.com/\u202egpj.exe", "whitespace"),
        (f"{A}\nimg.example.com/b.png", "whitespace"),  # not every line is a URL
    ],
)
def test_bad_urls_are_rejected(url: str, why: str) -> None:
    exc = rejected(csv_bytes(f'1,Shirt,"{url}"'))
    message = issue_at(exc, 2, URLS).message
    assert message.startswith("URL 1 ")
    assert why in message


def test_url_length_limit_is_inclusive() -> None:
    limits = CsvLimits(max_url_length=100)
    ok = "https://img.example.com/" + "a" * (100 - 24)
    assert len(ok) == 100
    assert parse_products(csv_bytes(f"1,Shirt,{ok}"), limits)[0].urls == (ok,)
    exc = rejected(csv_bytes(f"1,Shirt,{ok}b"), limits)
    assert "longer than 100" in issue_at(exc, 2, URLS).message


def test_default_url_length_limit_is_2048() -> None:
    long_url = "https://img.example.com/" + "a" * 2048
    exc = rejected(csv_bytes(f"1,Shirt,{long_url}"))
    assert "longer than 2048" in issue_at(exc, 2, URLS).message
    assert len(issue_at(exc, 2, URLS).message) < 300  # the URL is not echoed in full


def test_urls_per_row_limit() -> None:
    fifty = ",".join(f"https://img.example.com/{i}.jpg" for i in range(50))
    assert len(parse_products(csv_bytes(f'1,Shirt,"{fifty}"'))[0].urls) == 50
    exc = rejected(csv_bytes(f'1,Shirt,"{fifty},{A}"'))
    assert issue_at(exc, 2, URLS).message.startswith("51 image URLs; at most 50")
    assert len(exc.issues) == 1


@pytest.mark.parametrize("line", ["1,Shirt,", "1,Shirt", '1,Shirt," , ,"', "1,Shirt,,,,"])
def test_a_row_needs_at_least_one_url(line: str) -> None:
    exc = rejected(csv_bytes(line))
    assert issue_at(exc, 2, URLS).message == "At least one image URL is required."


def test_every_error_is_collected_with_row_and_column() -> None:
    data = csv_bytes(
        f"1,Shirt,{A}",  # row 2: fine
        f"x,,{A}",  # row 3: serial, name
        "",  # row 4: blank
        '3,"Multi\nline",ftp://a',  # row 5: URL
        f'4,Hat,"{A},nope"',  # row 6: URL 2
        f"1,Sock,{B}",  # row 7: duplicate of row 2
    )
    exc = rejected(data)
    assert (exc.status, exc.code) == (422, "validation_failed")
    assert [(i.row, i.column) for i in exc.issues] == [
        (3, SERIAL),
        (3, NAME),
        (5, URLS),
        (6, URLS),
        (7, SERIAL),
    ]
    assert exc.issues[3].message.startswith("URL 2 'nope'")
    assert "5 problem" in exc.message


def test_validation_is_all_or_nothing() -> None:
    with pytest.raises(CsvRejected) as info:
        parse_products(csv_bytes(*(f"{i},Shirt,{A}" for i in range(1, 100)), "100,,nope"))
    assert len(info.value.issues) == 2


def test_error_cap_stops_at_max_errors_and_says_more_were_omitted() -> None:
    data = csv_bytes(*(f"{i},,{A}" for i in range(1, 151)))
    exc = rejected(data)
    assert len(exc.issues) == 100
    assert exc.issues[-1].row == 101
    assert "omitted" in exc.message


def test_error_cap_is_configurable_and_exact_counts_are_not_truncated() -> None:
    three = csv_bytes("1,,x", f"2,Hat,{A}")  # row 2 has 2 issues, row 3 none
    exc = rejected(three, CsvLimits(max_errors=2))
    assert len(exc.issues) == 2
    assert "omitted" not in exc.message
    exc = rejected(csv_bytes("1,,x", "2,,x"), CsvLimits(max_errors=3))
    assert len(exc.issues) == 3
    assert "omitted" in exc.message


# --- header and empty files -------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Id,Product Name,Input Image Urls",
        "S. No.,Label,Input Image Urls",
        "S. No.,Product Name,Output Image Urls",
        "Product Name,S. No.,Input Image Urls",
        "S. No.,Product Name",
        "S. No.,Product Name,Input Image Urls,Notes",
        "S. No.;Product Name;Input Image Urls",
    ],
)
def test_wrong_header_is_rejected_listing_what_was_expected(header: str) -> None:
    exc = rejected(csv_bytes(f"1,Shirt,{A}", header=header))
    assert (exc.status, exc.code) == (400, "bad_header")
    assert "S. No., Product Name, Input Image Urls" in exc.message
    assert exc.issues
    assert all(issue.row == 1 for issue in exc.issues)


def test_missing_header_gets_a_hint() -> None:
    exc = rejected(csv_bytes(f"2,Hat,{B}", header=f"1,Shirt,{A}"))
    assert exc.code == "bad_header"
    assert "looks like data" in exc.message


def test_trailing_empty_header_cells_are_ignored() -> None:
    data = csv_bytes(f"1,Shirt,{A},,", header=HEADER + ",,")
    assert parse_products(data)[0].urls == (A,)


def test_header_without_rows_is_empty_csv() -> None:
    exc = rejected(csv_bytes("", "  ", ",,"))
    assert (exc.status, exc.code) == (422, "empty_csv")
    assert "no product rows" in exc.message


@pytest.mark.parametrize("data", [b"", b"\n\n", b"\xef\xbb\xbf", b" , ,\r\n"])
def test_empty_file_is_empty_csv(data: bytes) -> None:
    exc = rejected(data)
    assert (exc.status, exc.code) == (422, "empty_csv")


# --- hostile input ----------------------------------------------------------------


def test_too_many_bytes() -> None:
    data = csv_bytes(f"1,Shirt,{A}")
    assert parse_products(data, CsvLimits(max_bytes=len(data)))
    exc = rejected(data, CsvLimits(max_bytes=len(data) - 1))
    assert (exc.status, exc.code) == (413, "too_large")


def test_default_byte_limit_is_checked_before_anything_else() -> None:
    exc = rejected(b"\x00" * (20 * 1024 * 1024 + 1))
    assert (exc.status, exc.code) == (413, "too_large")


def test_too_many_rows() -> None:
    limits = CsvLimits(max_rows=5)
    assert len(parse_products(csv_bytes(*(f"{i},Shirt,{A}" for i in range(5))), limits)) == 5
    exc = rejected(csv_bytes(*(f"{i},Shirt,{A}" for i in range(6))), limits)
    assert (exc.status, exc.code) == (413, "too_many_rows")


def test_too_many_rows_stops_reading_at_the_cap() -> None:
    # Past the cap: bad rows and an unterminated quote that would be a 422 or a 400.
    rows = [f"{i},Shirt,{A}" for i in range(6)] + ["x,,ftp://x", '9,"never closed']
    exc = rejected(csv_bytes(*rows), CsvLimits(max_rows=5))
    assert exc.code == "too_many_rows"


def test_too_many_images_counts_every_url_of_the_file() -> None:
    limits = CsvLimits(max_images=6)
    two = f'"{A},{A}"'
    assert len(parse_products(csv_bytes(*(f"{i},Shirt,{two}" for i in range(3))), limits)) == 3
    exc = rejected(csv_bytes(*(f"{i},Shirt,{two}" for i in range(3)), f"9,Hat,{A}"), limits)
    assert (exc.status, exc.code) == (413, "too_many_images")
    assert "more than 6 image URLs" in exc.message and "row 5" in exc.message


def test_too_many_rows_with_default_limit_is_quick() -> None:
    data = csv_bytes(*(f"{i},S,{A}" for i in range(50_001))) + b'1,"never closed' + b"x" * 100
    started = time.perf_counter()
    exc = rejected(data)
    assert exc.code == "too_many_rows"
    assert time.perf_counter() - started < 5


def test_latin1_file_is_bad_encoding_with_line_number() -> None:
    data = (HEADER + f"\n1,Shirt,{A}\n2,Café,{B}\n").encode("latin-1")
    exc = rejected(data)
    assert (exc.status, exc.code) == (400, "bad_encoding")
    assert "line 3" in exc.message


def test_bad_utf8_deep_in_a_large_file_is_bad_encoding() -> None:
    rows = [f"{i},Shirt,{A}" for i in range(2000)]
    data = csv_bytes(*rows) + b"9999,Bad \xff\xfe,http://a.example/x\n"
    exc = rejected(data)
    assert exc.code == "bad_encoding"
    assert "line 2002" in exc.message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_and_utf32_with_a_bom_are_bad_encoding(encoding: str) -> None:
    exc = rejected(csv_bytes(f"1,Shirt,{A}").decode().encode(encoding))
    assert (exc.status, exc.code) == (400, "bad_encoding")
    assert "UTF-8" in exc.message


def test_utf16_without_a_bom_is_not_csv() -> None:
    exc = rejected(csv_bytes(f"1,Shirt,{A}").decode().encode("utf-16-be"))
    assert (exc.status, exc.code) == (415, "not_csv")


def test_overlong_and_surrogate_utf8_are_bad_encoding() -> None:
    for bad in (b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"):
        exc = rejected(csv_bytes(f"1,Shirt,{A}") + b"2,X" + bad + b",http://a.example/\n")
        assert exc.code == "bad_encoding"


def test_nul_bytes_are_not_csv() -> None:
    exc = rejected(csv_bytes(f"1,Sh\x00irt,{A}"))
    assert (exc.status, exc.code) == (415, "not_csv")
    assert "line 2" in exc.message


@pytest.mark.parametrize("byte", [b"\x01", b"\x08", b"\x1b", b"\x7f"])
def test_other_control_bytes_are_not_csv(byte: bytes) -> None:
    exc = rejected(csv_bytes(f"1,Shirt,{A}") + b"2,Hat" + byte + b",http://a.example/\n")
    assert (exc.status, exc.code) == (415, "not_csv")


def test_random_binary_is_refused() -> None:
    rng = random.Random(1234)
    for _ in range(20):
        exc = rejected(bytes(rng.randrange(256) for _ in range(4096)))
        assert exc.code in ("not_csv", "bad_encoding")


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("products.csv", b"0" * (50 * 1024 * 1024))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (_zip_bomb, "zip"),
        (lambda: gzip.compress(b"0" * 1_000_000), "gzip"),
        (lambda: bz2.compress(b"0" * 1_000_000), "bzip2"),
        (lambda: lzma.compress(b"0" * 1_000_000), "xz"),
        (lambda: b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 24, "7z"),
        (lambda: b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF"),
        (lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG"),
        (lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "JPEG"),
        (lambda: b"GIF89a\x01\x00\x01\x00", "GIF"),
        (lambda: b"GIF87a\x01\x00\x01\x00", "GIF"),
    ],
)
def test_archives_documents_and_images_are_not_csv(make: Callable[[], bytes], kind: str) -> None:
    exc = rejected(make())
    assert (exc.status, exc.code) == (415, "not_csv")
    assert kind in exc.message


@pytest.mark.parametrize(
    "magic", [b"PK\x03\x04", b"\x1f\x8b", b"BZh9", b"\xfd7zXZ\x00", b"%PDF-", b"\x89PNG\r\n\x1a\n"]
)
def test_magic_bytes_alone_are_enough(magic: bytes) -> None:
    # The rest is valid CSV text, so only the leading bytes can be why it is refused.
    exc = rejected(magic + csv_bytes(f"1,Shirt,{A}"))
    assert exc.code == "not_csv"
    assert "looks like" in exc.message


def test_zip_bomb_is_refused_without_decompressing(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _zip_bomb()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("decompression attempted")

    for module, name in [
        (zlib, "decompress"),
        (zlib, "decompressobj"),
        (gzip, "decompress"),
        (bz2, "decompress"),
        (lzma, "decompress"),
        (zipfile, "ZipFile"),
    ]:
        monkeypatch.setattr(module, name, forbidden)
    started = time.perf_counter()
    exc = rejected(bomb)
    assert exc.code == "not_csv"
    assert time.perf_counter() - started < 0.5


def test_unterminated_quote_is_malformed_and_points_at_its_row() -> None:
    exc = rejected(csv_bytes(f"1,Shirt,{A}", f'2,"Hat,{B}', f"3,Sock,{C}"))
    assert (exc.status, exc.code) == (400, "malformed_csv")
    assert "never closed" in exc.message
    assert exc.issues == [CsvIssue(3, None, exc.message)]


@pytest.mark.parametrize(
    "line",
    [f'1,"Shirt"x,{A}', f'1,"Sh"irt",{A}', f'1,Shirt,"{A}""{B}"z', f'1,"a""b"  x,{A}'],
)
def test_absurd_quoting_is_malformed(line: str) -> None:
    exc = rejected(csv_bytes(line))
    assert (exc.status, exc.code) == (400, "malformed_csv")
    assert "row 2" in exc.message


def test_unterminated_quote_in_a_huge_file_stops_at_the_cell_limit() -> None:
    data = csv_bytes('1,"Shirt', *(f"{i},Shirt,{A}" for i in range(2, 20_000)))
    exc = rejected(data)
    assert exc.code == "malformed_csv"
    assert "row 2" in exc.message


def test_cell_over_max_cell_chars_is_malformed_with_default_limits() -> None:
    name = "x" * 200_000
    assert parse_products(csv_bytes(f"1,{name},{A}"))[0].product_name == name
    exc = rejected(csv_bytes(f"1,{name}x,{A}"))
    assert (exc.status, exc.code) == (400, "malformed_csv")
    assert "200000" in exc.message


def test_cell_over_a_small_max_cell_chars_is_malformed() -> None:
    limits = CsvLimits(max_cell_chars=40)
    exc = rejected(csv_bytes(f'1,"{"y" * 41}",{A}'), limits)
    assert (exc.status, exc.code) == (400, "malformed_csv")
    assert "longer than 40" in exc.message


def test_global_csv_field_limit_is_never_lowered() -> None:
    before = csv.field_size_limit()
    csv.field_size_limit(10_000_000)
    try:
        parse_products(csv_bytes(f"1,Shirt,{A}"), CsvLimits(max_cell_chars=40))
        assert csv.field_size_limit() == 10_000_000
    finally:
        csv.field_size_limit(before)


@pytest.mark.parametrize("extra", [59, 60, 500])
def test_too_many_columns(extra: int) -> None:
    cells = ",".join([A] * extra)
    data = csv_bytes(f"1,Shirt,{cells}")
    exc = rejected(data)
    if extra + 2 > 60:
        assert (exc.status, exc.code) == (400, "malformed_csv")
        assert f"{extra + 2} columns" in exc.message
    else:  # 60 columns is allowed, but that many URLs is a validation error
        assert exc.code == "validation_failed"


def test_a_megabyte_of_commas_is_refused_before_splitting() -> None:
    started = time.perf_counter()
    exc = rejected(csv_bytes("1,Shirt," + "," * 1_000_000))
    assert (exc.status, exc.code) == (400, "malformed_csv")
    assert "longer than any valid row" in exc.message
    assert time.perf_counter() - started < 1


def test_many_short_lines_in_one_quoted_row_are_capped() -> None:
    # Quoted newlines chain a single row across many lines, each full of cells.
    chunk = '"\n",' + "," * 5000
    exc = rejected(csv_bytes("1,Shirt," + chunk * 200 + A))
    assert exc.code == "malformed_csv"
    assert "longer than any valid row" in exc.message


def test_mutated_input_only_ever_raises_csv_rejected() -> None:
    base = csv_bytes(f'1,"Shirt, blue",{A}', f'2,Hat,"{B},{C}"', end="\r\n")
    rng = random.Random(42)
    junk = [b'"', b",", b"\n", b"\r", b"\xff", b"\x00", b"=", b" ", b"\xe2\x80", b'""']
    for _ in range(500):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(data) + 1)
            if rng.random() < 0.5:
                data[at:at] = rng.choice(junk)
            else:
                del data[at : at + rng.randint(1, 5)]
        try:
            result = parse_products(bytes(data))
        except CsvRejected as exc:
            assert exc.status in (400, 413, 415, 422)
            assert exc.code and exc.message
        else:
            assert all(isinstance(row, ProductRow) for row in result)


def test_ten_thousand_rows_parse_quickly() -> None:
    data = csv_bytes(*(f'{i},Product {i},"{A}?{i},{B}?{i},{C}?{i}"' for i in range(1, 10_001)))
    started = time.perf_counter()
    rows = parse_products(data)
    elapsed = time.perf_counter() - started
    assert len(rows) == 10_000
    assert rows[-1] == ProductRow(
        10_001, 10_000, "Product 10000", (f"{A}?10000", f"{B}?10000", f"{C}?10000")
    )
    assert elapsed < 2


def test_rejection_str_has_status_and_code() -> None:
    exc = rejected(b"")
    assert str(exc).startswith("422 empty_csv: ")


# --- output CSV --------------------------------------------------------------------


def output_text(rows: list[OutputRow]) -> str:
    return "".join(iter_output_csv(rows))


def test_output_header_is_exact_and_comes_first_on_its_own() -> None:
    chunks = iter_output_csv([OutputRow(1, "Shirt", [A], ["https://out/a.jpg"])])
    assert next(chunks) == "S. No.,Product Name,Input Image Urls,Output Image Urls\r\n"
    assert OUTPUT_HEADER == ("S. No.", "Product Name", "Input Image Urls", "Output Image Urls")


def test_output_rows_in_order_with_crlf_and_plain_integer_serials() -> None:
    text = output_text(
        [
            OutputRow(3, "Hat", [B], ["https://out/b"]),
            OutputRow(1, "Shirt", [A, C], ["https://out/a", "https://out/c"]),
        ]
    )
    assert text == (
        "S. No.,Product Name,Input Image Urls,Output Image Urls\r\n"
        f"3,Hat,{B},https://out/b\r\n"
        f'1,Shirt,"{A},{C}","https://out/a,https://out/c"\r\n'
    )


def test_failed_images_leave_empty_positions() -> None:
    text = output_text([OutputRow(1, "Shirt", ["a", "b", "c"], ["A", None, "C"])])
    assert text.splitlines()[1] == '1,Shirt,"a,b,c","A,,C"'
    text = output_text([OutputRow(2, "Hat", ["a", "b", "c"], [None, None, None])])
    assert text.splitlines()[1] == '2,Hat,"a,b,c",",,"'
    text = output_text([OutputRow(3, "Sock", ["a"], [None])])
    assert text.splitlines()[1] == "3,Sock,a,"


def test_misaligned_output_urls_are_a_bug() -> None:
    with pytest.raises(ValueError, match="2 input URLs but 1 output"):
        OutputRow(1, "Shirt", ["a", "b"], ["A"])


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_prefixes_are_escaped(prefix: str) -> None:
    value = prefix + 'HYPERLINK("http://evil")'
    assert escape_cell(value) == "'" + value
    row = next(csv.reader(io.StringIO(output_text([OutputRow(1, value, [A], [A])]), newline="")))
    assert row == list(OUTPUT_HEADER)
    parsed = list(csv.reader(io.StringIO(output_text([OutputRow(1, value, [A], [A])]), newline="")))
    assert parsed[1][1] == "'" + value


@pytest.mark.parametrize(
    "invisible", ["\u200b", "\ufeff", "\u180e", "\u200e\u2060", "\u00a0", " ", "\u3000", "\u3164"]
)
@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\uff1d", "\uff0b"])
def test_formulas_behind_invisible_characters_are_escaped(invisible: str, prefix: str) -> None:
    value = invisible + prefix + "SUM(A1:A2)"
    assert escape_cell(value) == "'" + value


@pytest.mark.parametrize(
    "value", ["Shirt", "", "'=already quoted", "1+1", "a=b", "\u200bShirt", " Shirt", "\u200b"]
)
def test_safe_cells_are_unchanged(value: str) -> None:
    assert escape_cell(value) == value


def test_every_output_cell_is_escaped() -> None:
    text = output_text([OutputRow(-1, "@SUM(A1)", ["-a", "b"], ["=c", None])])
    assert text.splitlines()[1] == "'-1,'@SUM(A1),\"'-a,b\",\"'=c,\""


def test_output_round_trips_through_the_csv_module() -> None:
    rows = [
        OutputRow(1, 'Shirt, "blue"\nlarge', [A, B], ["https://out/1", None]),
        OutputRow(2, "Café ☀", [C], [None]),
        OutputRow(10, "=cmd|' /C calc'!A0", [A], ["https://out/3"]),
    ]
    parsed = list(csv.reader(io.StringIO(output_text(rows), newline="")))
    assert parsed == [
        list(OUTPUT_HEADER),
        ["1", 'Shirt, "blue"\nlarge', f"{A},{B}", "https://out/1,"],
        ["2", "Café ☀", C, ""],
        ["10", "'=cmd|' /C calc'!A0", A, "https://out/3"],
    ]


def test_output_input_columns_parse_back_as_the_same_products() -> None:
    products = parse_products(csv_bytes(f'1,Shirt,"{A},{B}"', f"2,Hat,{C}"))
    rows = [
        OutputRow(p.serial_number, p.product_name, p.urls, [None] * len(p.urls)) for p in products
    ]
    parsed = list(csv.reader(io.StringIO(output_text(rows), newline="")))
    buffer = io.StringIO()
    csv.writer(buffer).writerows(line[:3] for line in parsed)
    assert parse_products(buffer.getvalue().encode()) == products


def test_output_streams_large_batches_in_chunks_lazily() -> None:
    consumed = 0

    def rows() -> Iterator[OutputRow]:
        nonlocal consumed
        for i in range(20_000):
            consumed += 1
            yield OutputRow(i, f"Product {i}", [A, B], [A, None])

    chunks = iter_output_csv(rows())
    assert next(chunks).startswith("S. No.,")
    assert consumed == 0
    rest = list(chunks)
    assert len(rest) > 10
    assert all(len(chunk) < 70_000 for chunk in rest)
    lines = "".join(rest).split("\r\n")
    assert lines[0] == f'0,Product 0,"{A},{B}","{A},"'
    assert len(lines) == 20_001  # 20,000 rows and the empty string after the final CRLF


def test_empty_output_is_just_the_header() -> None:
    assert list(iter_output_csv([])) == [
        "S. No.,Product Name,Input Image Urls,Output Image Urls\r\n"
    ]
