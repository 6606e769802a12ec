"""Throw-away scale-out backends on loopback: a Redis database, a moto bucket, the whole env.

    with redis_database() as url:            # redis://127.0.0.1:6379/<n>, flushed after
    with scaleout_env(s3, queue="redis") as env:   # fresh PostgreSQL db + Redis db + bucket

A Redis database number is reserved with `SET … NX` inside that database, so
concurrent test sessions on one machine never share one; it is flushed on exit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from support.databases import postgres_database
from support.s3server import S3Server, dummy_s3_env

REDIS = "redis://127.0.0.1:6379"
_RESERVATION = "imgbatch-test:reserved"


@contextmanager
def redis_database(ttl: int = 1800) -> Iterator[str]:
    """Reserve an empty Redis database (1-15), yield its URL, flush it after."""
    for number in range(1, 16):
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        try:
            if client.set(_RESERVATION, uuid.uuid4().hex, nx=True, ex=ttl):
                if client.dbsize() != 1:  # someone else's data without our marker
                    client.delete(_RESERVATION)
                    continue
                try:
                    yield f"{REDIS}/{number}"
                finally:
                    client.flushdb()
                return
        finally:
            client.close()
    raise RuntimeError("no free Redis database among 1-15 on 127.0.0.1:6379")


def sa_to_libpq(url: str) -> str:
    """`postgresql+psycopg://…` (SQLAlchemy) → `postgresql://…` (what an operator writes)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def scaleout_env(s3: S3Server, queue: str = "redis") -> Iterator[dict[str, str]]:
    """Environment for a scale-out imgbatch: fresh PostgreSQL database, queue, fresh bucket.

    `queue` is "redis" (a reserved Redis database) or "postgresql" (the same database).
    `env["IMGBATCH_STORAGE_URL"]` is `s3://<bucket>/imgs`.
    """
    bucket = f"imgbatch-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(bucket)
    with postgres_database() as db_url:
        env = {
            **dummy_s3_env(s3.endpoint_url),
            "IMGBATCH_DATABASE_URL": sa_to_libpq(db_url),
            "IMGBATCH_STORAGE_URL": f"s3://{bucket}/imgs",
        }
        if queue == "redis":
            with redis_database() as queue_url:
                yield {**env, "IMGBATCH_QUEUE_URL": queue_url}
        elif queue == "postgresql":
            yield {**env, "IMGBATCH_QUEUE_URL": env["IMGBATCH_DATABASE_URL"]}
        else:
            raise ValueError(f"unknown queue backend {queue!r}")
