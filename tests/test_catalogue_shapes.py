"""The CSV shapes people actually have: header spellings, output columns, list-shaped URL cells.

Every accepted spelling and cell shape is parsed here, and every refused one is
checked for its exact answer (status, code, message), so a user's file that
still fails says precisely what to change.
"""

from __future__ import annotations

import pytest

from imgbatch.catalogue import (
    CsvIssue,
    CsvRejected,
    OutputRow,
    ProductRow,
    iter_output_csv,
    parse_products,
)
from imgbatch.catalogue.headers import IGNORED, NAME, OUTPUT, SERIAL, SPELLINGS, URLS, header_key

A = "https://img.example.com/a.jpg"
B = "http://img.example.com/b.png"
C = "https://cdn.example.org/c"


def parse(header: str, *lines: str) -> list[ProductRow]:
    return parse_products(("\n".join([header, *lines]) + "\n").encode())


def refused(header: str, *lines: str) -> CsvRejected:
    with pytest.raises(CsvRejected) as info:
        parse(header, *lines)
    return info.value


def variants(spelling: str) -> list[str]:
    """A spelling as people write it: as listed, upper, lower, snake_case, camelCase."""
    words = [w for w in spelling.replace(".", " ").replace("/", " ").split() if w]
    return [
        spelling,
        spelling.upper(),
        spelling.lower(),
        "_".join(words),
        words[0].lower() + "".join(w.capitalize() for w in words[1:]),
    ]


# --- header_key ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "key"),
    [
        ("Input Image Urls", "inputimageurl"),
        ("input_image_url", "inputimageurl"),
        ("inputImageURLs", "inputimageurl"),
        ("INPUT-IMAGE-URLS", "inputimageurl"),
        ("  Input   Images  ", "inputimage"),
        ("S. No.", "sno"),
        ("S_No", "sno"),
        ("SNo", "sno"),
        ("Sr.No", "srno"),
        ("#", "no"),
        ("Serial #", "serialno"),
        ("SerialNumber", "serialnumber"),
        ("\ufeffS. No.", "sno"),
        ("Address", "address"),  # -ss is not a plural
        ("Nº", "nº"),  # letters beyond ASCII are kept, not dropped
    ],
)
def test_header_key_normalises_case_punctuation_underscores_camel_case_and_plurals(
    cell: str, key: str
) -> None:
    assert header_key(cell) == key


def test_spellings_of_different_columns_never_collide() -> None:
    keys = {column: {header_key(s) for s in spellings} for column, spellings in SPELLINGS.items()}
    columns = list(keys)
    for i, first in enumerate(columns):
        for second in columns[i + 1 :]:
            assert not keys[first] & keys[second], (first, second)


# --- every accepted spelling -------------------------------------------------------------


@pytest.mark.parametrize("spelling", [v for s in SPELLINGS[SERIAL] for v in variants(s)])
def test_every_serial_spelling_is_accepted(spelling: str) -> None:
    assert parse(f"{spelling},Product Name,Image Urls", f"7,Shirt,{A}")[0].serial_number == 7


@pytest.mark.parametrize("spelling", [v for s in SPELLINGS[NAME] for v in variants(s)])
def test_every_name_spelling_is_accepted(spelling: str) -> None:
    assert parse(f"S. No.,{spelling},Image Urls", f"1,Shirt,{A}")[0].product_name == "Shirt"


@pytest.mark.parametrize("spelling", [v for s in SPELLINGS[URLS] for v in variants(s)])
def test_every_url_spelling_is_accepted(spelling: str) -> None:
    assert parse(f"S. No.,Product Name,{spelling}", f'1,Shirt,"{A},{B}"')[0].urls == (A, B)


@pytest.mark.parametrize(
    "header",
    [
        # the spellings the issue found refused or inconsistent, as users sent them
        "S_No,product_name,input_images",
        "SerialNumber,Product Name,Input Images",
        "S. No.,Product Name,Images",
        "S. No.,Product Name,Image Links",
        "S. No.,Product Name,Product Image Urls",
        "S. No.,Product Name,Image URL",
        "sno,name,image_url",
        "Sr. No.,Product,Input Image URLs",
        "#,SKU,urls",
        "serial_no,productName,imageUrls",
    ],
)
def test_spellings_from_real_files_are_accepted(header: str) -> None:
    assert parse(header, f"1,Shirt,{A}") == [ProductRow(2, 1, "Shirt", (A,))]


# --- refused headers: exact answers -------------------------------------------------------


def _accepted(column: str) -> str:
    return f"accepted spellings: {', '.join(SPELLINGS[column])} ({IGNORED})"


def test_an_unrecognised_url_heading_is_named_with_every_accepted_spelling() -> None:
    exc = refused("S. No.,Product Name,Pics", f"1,Shirt,{A}")
    message = f"Column 3 is 'Pics', not a Input Image Urls heading; {_accepted(URLS)}."
    assert (exc.status, exc.code) == (400, "bad_header")
    assert exc.issues == [CsvIssue(1, URLS, message)]
    assert exc.message == (
        f"The first row must be the header S. No., Product Name, Input Image Urls: {message}"
    )
    assert "Input Images, Input Urls" in exc.message


def test_an_unrecognised_name_heading_is_named() -> None:
    exc = refused("S. No.,Label,Image Urls", f"1,Shirt,{A}")
    assert exc.issues == [
        CsvIssue(1, NAME, f"Column 2 is 'Label', not a Product Name heading; {_accepted(NAME)}.")
    ]


def test_a_missing_column_is_named() -> None:
    exc = refused("S. No.,Product Name", "1,Shirt")
    assert exc.issues == [
        CsvIssue(1, URLS, f"Column 3 is empty, not a Input Image Urls heading; {_accepted(URLS)}.")
    ]


def test_columns_out_of_order_are_named_as_what_they_are() -> None:
    exc = refused("Product Name,S. No.,Input Image Urls", f"Shirt,1,{A}")
    order = (
        "the columns must be S. No., Product Name, Input Image Urls in this order "
        "(then optionally Output Image Urls)."
    )
    assert exc.issues == [
        CsvIssue(1, SERIAL, f"Column 1 is 'Product Name', the Product Name column; {order}"),
        CsvIssue(1, NAME, f"Column 2 is 'S. No.', the S. No. column; {order}"),
    ]


def test_an_output_column_without_an_input_column_is_refused() -> None:
    exc = refused("S. No.,Product Name,Output Image Urls", f"1,Shirt,{A}")
    assert [issue.message for issue in exc.issues] == [
        "Column 3 is 'Output Image Urls', the Output Image Urls column; the columns must be "
        "S. No., Product Name, Input Image Urls in this order (then optionally Output Image Urls)."
    ]


def test_an_unknown_extra_column_is_refused_naming_what_may_follow() -> None:
    exc = refused("S. No.,Product Name,Input Image Urls,Notes", f"1,Shirt,{A},fragile")
    assert exc.issues == [
        CsvIssue(
            1,
            None,
            "Unexpected extra column 4: 'Notes'. Only an Output Image Urls column (ignored) "
            f"may follow Input Image Urls; {_accepted(OUTPUT)}.",
        )
    ]


def test_a_column_after_the_output_column_is_refused() -> None:
    exc = refused("S. No.,Product Name,Input Image Urls,Output Image Urls,Notes", f"1,S,{A},{B},x")
    assert [(i.column, i.message.split(".")[0]) for i in exc.issues] == [
        (None, "Unexpected extra column 5: 'Notes'")
    ]


def test_more_than_three_header_problems_are_summarised() -> None:
    exc = refused("a,b,c,d,e", "1,2,3,4,5")
    assert len(exc.issues) == 5
    assert exc.message.endswith("(and 2 more)")


# --- output CSVs as input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "output_heading",
    [v for s in SPELLINGS[OUTPUT] for v in variants(s)],
)
def test_a_trailing_output_column_is_ignored_in_any_spelling(output_heading: str) -> None:
    rows = parse(
        f"S. No.,Product Name,Input Image Urls,{output_heading}",
        f'1,Shirt,"{A},{B}","https://out.example/1.jpg,https://out.example/2.png"',
        f"2,Hat,{C},",
    )
    assert rows == [ProductRow(2, 1, "Shirt", (A, B)), ProductRow(3, 2, "Hat", (C,))]


def test_our_own_output_csv_parses_back_to_its_input() -> None:
    out_rows = [
        OutputRow(1, "Shirt", [A, B], ["https://out.example/r/1/0.jpg", None]),
        OutputRow(2, 'Hat, "wool"', [C], [None]),
        OutputRow(3, "Scarf", [A], ["https://out.example/r/3/0.jpg"]),
    ]
    data = "".join(iter_output_csv(out_rows)).encode()
    assert parse_products(data) == [
        ProductRow(2, 1, "Shirt", (A, B)),
        ProductRow(3, 2, 'Hat, "wool"', (C,)),
        ProductRow(4, 3, "Scarf", (A,)),
    ]


def test_a_peer_output_csv_with_json_lists_in_both_url_columns_is_accepted() -> None:
    rows = parse(
        "Serial Number,Product Name,Input Image Urls,Output Image Urls",
        f'1,SKU1,"[""{A}"", ""{B}""]","[""https://peer.example/o1.jpg""]"',
    )
    assert rows == [ProductRow(2, 1, "SKU1", (A, B))]


def test_with_an_output_column_a_wider_row_is_refused() -> None:
    exc = refused("S. No.,Product Name,Input Image Urls,Output Image Urls", f"1,Shirt,{A},{B},{C}")
    assert exc.issues == [
        CsvIssue(
            2,
            URLS,
            "Row has 5 columns but 4 are expected. Put all image URLs in one quoted cell: "
            '"https://a.jpg,https://b.jpg".',
        )
    ]


# --- URL cell shapes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell",
    [
        f'"{A},{B}"',  # comma-separated
        f'"{A}, {B}"',
        f'"{A},\n{B},"',  # line breaks after commas, a trailing comma
        f'"{A}\n{B}"',  # line breaks only
        f'"{A}\r\n{B}"',
        f'"{A} {B}"',  # spaces only
        f"\"['{A}', '{B}']\"",  # Python str(list)
        f"\"['{A}','{B}',]\"",
        f'"[""{A}"",""{B}""]"',  # JSON array, as a CSV writer quotes it
        f'"[ ""{A}"" , ""{B}"" ]"',
        f'"[{A}, {B}]"',  # unquoted items
        f"['{A}', '{B}']",  # a Python list not quoted as a CSV cell: spilled, joined again
        f'"[""{A}"", ""{B}""]"',
    ],
)
def test_url_cell_shapes_are_accepted(cell: str) -> None:
    assert parse("S. No.,Product Name,Input Image Urls", f"1,Shirt,{cell}")[0].urls == (A, B)


def test_json_escapes_in_a_list_are_decoded() -> None:
    cell = '"[""https:\\/\\/img.example.com\\/a.jpg"", ""https://img.example.com/\\u00e9.jpg""]"'
    assert parse("S. No.,Product Name,Input Image Urls", f"1,Shirt,{cell}")[0].urls == (
        A,
        "https://img.example.com/é.jpg",
    )


def test_python_list_items_keep_their_quotes_commas_and_escapes() -> None:
    items = ["https://img.example.com/it's.jpg", "https://img.example.com/a,b.jpg", A]
    python = str(items)  # repr picks double quotes for the item holding a single quote
    assert python.startswith("[\"https://img.example.com/it's.jpg\", '")
    cell = '"' + python.replace('"', '""') + '"'
    rows = parse("S. No.,Product Name,Input Image Urls", f"1,Shirt,{cell}")
    assert rows[0].urls == tuple(items)
    escaped = '"' + "['https://img.example.com/it\\'s.jpg']" + '"'
    rows = parse("S. No.,Product Name,Input Image Urls", f"1,Shirt,{escaped}")
    assert rows[0].urls == ("https://img.example.com/it's.jpg",)


LIST_REFUSED = (
    "looks like a list but is not a flat list of quoted URLs "
    "(write ['https://a/1.jpg', 'https://a/2.jpg'] or comma-separated URLs)"
)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (f'"[[""{A}""]]"', f"The image URL cell '[[\"{A}\"]]' {LIST_REFUSED}."),
        (f"\"['{A}'; '{B}']\"", f"The image URL cell \"['{A}'; '{B}']\" {LIST_REFUSED}."),
        (f'"[\'{A}]"', f'The image URL cell "[\'{A}]" {LIST_REFUSED}.'),
        (
            '"[""https://a.example/\\x.jpg""]"',
            "The image URL cell '[\"https://a.example/\\\\x.jpg\"]' looks like a JSON list but "
            "has a bad escape in a string.",
        ),
        ("[]", "At least one image URL is required."),
        ("\"['', ' ']\"", "At least one image URL is required."),
        (
            f"\"['{A}', 'ftp://x/y']\"",
            "URL 2 'ftp://x/y' must be an absolute URL starting with http:// or https://.",
        ),
        (
            f"\"['{A} {B}']\"",
            f"URL 1 '{A} {B}' contains whitespace or control characters (separate URLs with commas).",
        ),
    ],
)
def test_refused_url_cells_say_exactly_why(cell: str, message: str) -> None:
    exc = refused("S. No.,Product Name,Input Image Urls", f"1,Shirt,{cell}")
    assert (exc.status, exc.code) == (422, "validation_failed")
    assert exc.issues == [CsvIssue(2, URLS, message)]


def test_a_huge_nested_list_is_one_refusal_not_a_crash() -> None:
    cell = "[" * 100_000 + "]" * 100_000
    exc = refused("S. No.,Product Name,Input Image Urls", f"1,Shirt,{cell}")
    assert exc.issues[0].message.endswith(f"{LIST_REFUSED}.")


def test_a_list_counts_against_the_urls_per_row_limit() -> None:
    cell = '"[' + ",".join(f"'{A}?{i}'" for i in range(51)) + ']"'
    exc = refused("S. No.,Product Name,Input Image Urls", f"1,Shirt,{cell}")
    assert exc.issues == [CsvIssue(2, URLS, "51 image URLs; at most 50 are allowed per row.")]
