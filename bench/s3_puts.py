"""S3 uploads of a job's batch: one after another vs `S3Storage.put_many` in parallel.

Starts a real S3-compatible server (moto, on loopback), uploads the same objects
(JPEG-sized random bytes) in batches of a job's size both ways, alternating which goes
first, and prints objects/second and the ratio. Loopback moto costs CPU rather than
latency; against a real endpoint, where a round trip is mostly waiting, the gain is
expected to be larger (not measured here: tests and benchmarks stay on loopback).

    .venv/bin/python bench/s3_puts.py
    .venv/bin/python bench/s3_puts.py --batches 50 --batch 8 --kib 150
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable
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
    failed = [outcome for outcome in storage.put_many(batch) if outcome is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} uploads failed, the first: {failed[0]}")


Upload = Callable[[Storage, list[PutObject]], None]


def rate(storage: Storage, batches: list[list[PutObject]], upload: Upload) -> float:
    started = time.perf_counter()
    for batch in batches:
        upload(storage, batch)
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
            if round_ % 2:  # the machine's speed drifts: alternate which goes first
                parallel = rate(storage, batches, together)
                serial = rate(storage, batches, one_by_one)
            else:
                serial = rate(storage, batches, one_by_one)
                parallel = rate(storage, batches, together)
            print(f"{round_ + 1:5d} {serial:17.1f} {parallel:15.1f} {parallel / serial:6.2f}")


if __name__ == "__main__":
    main()
