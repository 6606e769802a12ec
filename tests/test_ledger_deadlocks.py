"""No deadlock between workers and the sweeper on PostgreSQL (issue 11, defect 3).

A 20,000-image backlog; worker threads claim jobs of random images (short leases, so
claims expire under them) and record them, while a sweeper re-pends expired leases and
lost images as fast as it can. Every statement that locks several image rows locks them
in id order or skips rows another transaction holds, so PostgreSQL must count no deadlock
for the database, and no thread may see an error.
"""

from __future__ import annotations

import random
import threading
import time

import psycopg
from sqlalchemy.exc import DBAPIError

from imgbatch import ledger
from imgbatch.catalogue import ProductRow
from imgbatch.ledger import Database, ImageResult, upgrade, utcnow
from imgbatch.ledger import statuses as st
from support.databases import PG_ADMIN, add_request, postgres_database

IMAGES = 20_000
SECONDS = 8.0


def test_workers_and_a_fast_sweeper_never_deadlock() -> None:
    with postgres_database() as url:
        upgrade(url)
        db = Database(url)
        products = [
            ProductRow(row=i + 2, serial_number=i + 1, product_name="P", urls=(f"https://x/{i}",))
            for i in range(IMAGES)
        ]
        ids = add_request(db, products, "d" * 32)
        stop = threading.Event()
        errors: list[BaseException] = []
        claimed = [0]

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            try:
                while not stop.is_set():
                    job = rng.sample(ids, 8)
                    mine = ledger.claim_images(db, job, lease_seconds=0.05, max_attempts=1000)
                    claimed[0] += len(mine)
                    time.sleep(rng.uniform(0, 0.06))  # some leases run out meanwhile
                    results = [(c, ImageResult(status=st.DONE)) for c in mine]
                    ledger.record_results(db, results[: rng.randint(0, len(results))])
            except BaseException as exc:
                errors.append(exc)

        def sweeper() -> None:
            try:
                while not stop.is_set():
                    for _ in ledger.expired_lease_batches(db, max_attempts=1000):
                        pass
                    for _ in ledger.requeue_lost(db, utcnow(), limit=5000):
                        pass
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        threads.append(threading.Thread(target=sweeper))
        threads.append(threading.Thread(target=sweeper))
        for t in threads:
            t.start()
        time.sleep(SECONDS)
        stop.set()
        for t in threads:
            t.join(30)
        db.engine.dispose()
        assert not errors, [e for e in errors if isinstance(e, DBAPIError)] or errors
        assert claimed[0] > 1000  # the workers did work while the sweeper swept
        name = url.rsplit("/", 1)[1]
        time.sleep(1.5)  # statistics reach pg_stat_database within a second
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            deadlocks = conn.execute(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = %s", (name,)
            ).fetchone()
        assert deadlocks is not None and deadlocks[0] == 0, f"{deadlocks[0]} deadlocks"
