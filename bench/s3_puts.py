"""S3 uploads of a job's batch: one after another vs `S3Storage.put_many` in parallel.

Starts a real S3-compatible server (moto, on loopback), uploads the same objects
(JPEG-sized random bytes) in batches of a job's size both ways, and prints objects/second
and the ratio. On a real S3 endpoint each round trip is longer than on loopback, so the
gain there is larger than here.

    .venv/bin/python bench/s3_puts.py
    .venv/bin/python bench/s3_puts.py --batches 50 --batch 8 --kib 150
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from imgbatch.config import Settings  # noqa: E402
from imgbatch.storage import PutObject, Storage, open_storage  # noqa: E402
from support.s3server import running_s3_server  # noqa: E402


def one_by_one(storage: Storage, batch: list[PutObject]) -> None:
    for obj in batch:
        storage.put(obj.key, obj.data, obj.content_type)


def together(storage: Storage, batch: list[PutObject]) -> None:
    assert storage.put_many(batch) == [None] * len(batch)


def rate(storage: Storage, batches: list[list[PutObject]], upload: object) -> float:
    started = time.perf_counter()
    for batch in batches:
        upload(storage, batch)  # type: ignore[operator]
    return sum(map(len, batches)) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8, help="objects per batch (a job's images)")
    parser.add_argument("--kib", type=int, default=120, help="size of each object")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with running_s3_server() as server:
        os.environ.update(server.env())
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        server.create_bucket(bucket)
        storage = open_storage(f"s3://{bucket}", Settings())
        data = os.urandom(args.kib * 1024)
        batches = [
            [PutObject(f"r/{b}/{i}.jpg", data, "image/jpeg") for i in range(args.batch)]
            for b in range(args.batches)
        ]
        one_by_one(storage, batches[0])  # warm up connections
        together(storage, batches[0])
        print(f"{args.batches} batches of {args.batch} objects of {args.kib} KiB, moto on loopback")
        print(f"{'round':>5} {'one by one obj/s':>17} {'put_many obj/s':>15} {'ratio':>6}")
        for round_ in range(args.rounds):
            serial = rate(storage, batches, one_by_one)
            parallel = rate(storage, batches, together)
            print(f"{round_ + 1:5d} {serial:17.1f} {parallel:15.1f} {parallel / serial:6.2f}")


if __name__ == "__main__":
    main()
