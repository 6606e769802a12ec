"""The services one process needs, built once from settings and shared by API and workers."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from imgbatch.config import Settings
from imgbatch.fetching import AddressPolicy, Fetcher, FetchLimits, HostBoard
from imgbatch.ledger import Database
from imgbatch.queue import JobQueue
from imgbatch.storage import Storage, open_storage


@dataclass
class Context:
    """Lazily built adapters: a forked worker process builds its own on first use."""

    settings: Settings
    handler: Callable[[list[int]], None] | None = None
    on_mark: Callable[[int], None] | None = None  # a worker took the sweeper's mark out

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.resolved_database_url)

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.settings.resolved_storage_url, self.settings)

    @cached_property
    def policy(self) -> AddressPolicy:
        return AddressPolicy.from_settings(self.settings)

    @cached_property
    def fetcher(self) -> Fetcher:
        return Fetcher(self.policy, FetchLimits.from_settings(self.settings), hosts=self.hosts)

    @cached_property
    def hosts(self) -> HostBoard:
        """Per-host slots and cool-downs, shared with every process using this data dir."""
        s = self.settings
        return HostBoard(
            s.data_dir.resolve() / "hosts",
            s.fetch_per_host,
            first_delay=s.retry_delay_seconds,
            max_delay=s.retry_max_delay_seconds,
            longest=max(s.fetch_retry_seconds, 1.0),
            slot_wait=s.fetch_total_timeout,
        )

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(
            self.settings.resolved_queue_url,
            handler=self.handler,
            images_per_job=self.settings.images_per_job,
            on_mark=self.on_mark,
        )

    def output_url(self, key: str) -> str:
        """Where a stored object can be downloaded: the store's public URL or our /files/ route."""
        return (
            self.storage.public_url(key) or f"{self.settings.resolved_public_base_url}/files/{key}"
        )


_per_process: dict[int, Context] = {}


def process_context(
    settings: Settings,
    handler: Callable[[list[int]], None] | None = None,
    on_mark: Callable[[int], None] | None = None,
) -> Context:
    """One Context per process id, so forked workers never share connections with their parent."""
    pid = os.getpid()
    ctx = _per_process.get(pid)
    if ctx is None:
        ctx = _per_process[pid] = Context(settings, handler, on_mark)
    return ctx
