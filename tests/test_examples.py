"""The README's offline demo stays true: the example CSV is valid and points at shipped photos."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from imgbatch.catalogue import parse_products
from imgbatch.imaging import sniff_format

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_example_csv_is_valid_and_its_photos_exist() -> None:
    products = parse_products((EXAMPLES / "products.csv").read_bytes())
    assert [p.serial_number for p in products] == [1, 2, 3, 4]
    names = [urlsplit(url).path.lstrip("/") for p in products for url in p.urls]
    assert all(urlsplit(u).netloc == "127.0.0.1:9000" for p in products for u in p.urls)
    missing = [n for n in names if not (EXAMPLES / "images" / n).is_file()]
    assert missing == ["does-not-exist.jpg"]  # the one failure the README promises
    for name in set(names) - set(missing):
        assert sniff_format((EXAMPLES / "images" / name).read_bytes()) in ("jpeg", "png")
