"""The images ZIP of a finished request: throughput and memory, local files and S3 (moto).

Writes a request of N done images (random bytes of K KiB each, stored as the workers store
them) into a SQLite ledger and a store, then streams `reports.iter_images_zip` to nowhere
with the next objects opened ahead (`LOOKAHEAD`) and without, alternating, and prints
MB/s (an untraced pass) and the peak of Python allocations (a pass under tracemalloc).

    .venv/bin/python bench/zip_export.py                     # 2,000 images of 120 KiB
    .venv/bin/python bench/zip_export.py --images 500 --kib 400 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from imgbatch import jobs, ledger  # noqa: E402
from imgbatch.catalogue import ProductRow  # noqa: E402
from imgbatch.config import Settings  # noqa: E402
from imgbatch.context import Context  # noqa: E402
from imgbatch.ledger import Request, upgrade  # noqa: E402
from imgbatch.ledger import statuses as st  # noqa: E402
from imgbatch.reports import images_zip  # noqa: E402
from imgbatch.storage import PutObject  # noqa: E402
from support.databases import add_request  # noqa: E402
from support.s3server import running_s3_server  # noqa: E402


def build(ctx: Context, images: int, kib: int) -> Request:
    request_id = "bench" + os.urandom(8).hex()
    rows = [
        ProductRow(
            row=i + 2, serial_number=i + 1, product_name=f"Product {i}", urls=(f"https://x/{i}",)
        )
        for i in range(images)
    ]
    ids = add_request(ctx.db, rows, request_id)
    for start in range(0, len(ids), 200):
        claimed = ledger.claim_images(ctx.db, ids[start : start + 200], lease_seconds=600)
        results = []
        puts = []
        for image in claimed:
            key = f"{request_id}/{image.serial_number}/{image.position}.jpg"
            puts.append(PutObject(key, os.urandom(kib * 1024), "image/jpeg"))
            results.append(
                (image, ledger.ImageResult(status=st.DONE, output_key=key, bytes_out=kib * 1024))
            )
        ctx.storage.put_many(puts)
        ledger.record_results(ctx.db, results)
    jobs.finalize(ctx, request_id)
    with ctx.db.session() as session:
        request = session.get(Request, request_id)
        assert request is not None and request.status == st.COMPLETED
        return request


def stream(ctx: Context, request: Request, lookahead: int) -> tuple[float, float]:
    """MB/s of one pass (untraced), and the allocation peak of another (tracemalloc)."""
    images_zip.LOOKAHEAD = lookahead
    started = time.perf_counter()
    total = sum(len(chunk) for chunk in images_zip.iter_images_zip(ctx, request))
    seconds = time.perf_counter() - started
    tracemalloc.start()
    for _chunk in images_zip.iter_images_zip(ctx, request):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return total / 1e6 / seconds, peak / 1e6


def run(name: str, ctx: Context, args: argparse.Namespace) -> None:
    request = build(ctx, args.images, args.kib)
    for _ in range(args.rounds):
        for lookahead in (0, 4):
            rate, peak = stream(ctx, request, lookahead)
            print(f"{name:6} lookahead {lookahead}: {rate:7.1f} MB/s, peak {peak:5.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--kib", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/ledger.db"
        upgrade(url)
        local = Settings(data_dir=Path(tmp), database_url=url, storage_fsync=False)
        run("files", Context(local), args)
        with running_s3_server() as server:
            os.environ.update(server.env())
            server.create_bucket("bench")
            s3 = local.model_copy(update={"storage_url": "s3://bench/zip"})
            run("S3", Context(s3), args)


if __name__ == "__main__":
    main()
