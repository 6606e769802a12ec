"""One settings object, read once, from the environment and a `.env` file.

Every backend is named by a URL (database, queue, storage), so the embedded
default and the scale-out shape are one codebase chosen by configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_MiB = 1024 * 1024


def sqlalchemy_url(url: str) -> str:
    """A database URL as SQLAlchemy wants it: libpq-style schemes use psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    return url


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All of imgbatch's knobs. Environment names are `IMGBATCH_<FIELD>` unless an alias says otherwise."""

    model_config = SettingsConfigDict(
        env_prefix="IMGBATCH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- where things live -------------------------------------------------
    data_dir: Path = Path("./data")
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("IMGBATCH_DATABASE_URL", "DB_CONNECTION_STRING"),
    )
    queue_url: str | None = None
    storage_url: str | None = None
    public_base_url: str | None = None
    public_storage_base_url: str | None = None
    # Local files: fsync each image and its directory before the ledger records it, so a
    # power loss never leaves a "done" image without its bytes. Off trades that for speed.
    storage_fsync: bool = True
    # JPEG -> JPEG at a fixed quality without resizing through libjpeg-turbo directly
    # (imaging.turbo): 1.4-1.8x less CPU than the Pillow path. Off: every image takes Pillow.
    jpeg_fast_path: bool = True

    # --- S3-compatible storage (falls back to the usual AWS_* variables) ----
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None

    # --- serving -------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, validation_alias=AliasChoices("IMGBATCH_PORT", "PORT"))
    log_format: str = "text"  # "text" or "json"
    log_level: str = "INFO"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- safety --------------------------------------------------------------
    allow_private_urls: bool = False
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_ports: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [80, 443])
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_keys_file: Path | None = None
    upload_rate_limit: int = 60  # uploads per minute per key (or client address when open)

    # --- CSV limits ----------------------------------------------------------
    max_csv_bytes: int = 20 * _MiB
    max_rows: int = 50_000
    max_urls_per_row: int = 50
    max_url_length: int = 2048
    max_cell_chars: int = 200_000
    max_columns: int = 60
    # Image URLs in one upload (413 too_many_images): what one request may ask of the workers.
    max_images_per_request: int = Field(default=100_000, ge=1)
    max_concurrent_uploads: int = 4  # parsed at once per API process; more wait their turn
    # An upload's body must arrive in full within this many seconds, and at this many bytes
    # per second on average from 5 s on (api.bodies); else 408. Request heads: see below.
    upload_timeout: float = Field(default=300.0, gt=0)
    upload_min_rate: float = Field(default=16 * 1024, ge=0)
    # A request head (request line and headers) must be complete within this many seconds.
    request_head_timeout: float = Field(default=10.0, gt=0)

    # --- fetching ------------------------------------------------------------
    fetch_connect_timeout: float = 5.0
    fetch_total_timeout: float = 30.0
    fetch_max_bytes: int = 25 * _MiB
    fetch_max_redirects: int = 5
    fetch_attempts: int = 3
    fetch_backoff_base: float = 0.5

    # --- imaging -------------------------------------------------------------
    default_quality: int | Literal["auto"] = 50  # 1..100, or "auto" (the quality search)
    # Scale every image down to fit this box unless the upload says otherwise (unset: never).
    default_max_width: int | None = Field(default=None, ge=1, le=16_384)
    default_max_height: int | None = Field(default=None, ge=1, le=16_384)
    # The score quality=auto aims at: SSIM on luma, chosen in bench/auto_quality.py
    # (the same default as imaging.DEFAULT_AUTO_TARGET, which this layer cannot import).
    auto_quality_target: float = Field(default=0.97, gt=0.5, lt=1.0)
    max_pixels: int = 50_000_000
    worker_max_rss_mb: int = 2048
    # CPU seconds one image may take (fetch, decode, compress): past it the image fails
    # `too_complex` and its worker process is replaced (jobs.budget). 0 turns it off.
    max_image_seconds: float = Field(default=60.0, ge=0)

    # --- workers and recovery -------------------------------------------------
    concurrency: int = 0  # 0 = one per CPU core, plus one
    worker_type: str = "process"  # "process" or "thread"
    # Most images in one job: claimed, stored and recorded together (see queue.job_batches).
    images_per_job: int = Field(default=8, ge=1, le=100)
    lease_seconds: float = 120.0
    max_attempts: int = 5  # claims of one image before it is failed (a poison image kills workers)
    sweep_interval: float = 15.0
    # A job taken out of the queue this recently may still be on its way to its claim: with
    # the queue empty, a pending image not enqueued for this long has lost its job.
    stale_pending_seconds: float = 30.0
    # While the queue is busy, the sweeper's mark tells which jobs left it; a mark not seen
    # after this long was lost with the queue's contents and is sent again.
    lost_job_seconds: float = 900.0

    # --- a backend's fault: the work goes back and is retried with back-off ------
    # An image whose store (or another backend) fails is released, not failed: retried
    # after `retry_delay_seconds`, the wait doubling while the backend stays down, at most
    # `retry_max_delay_seconds`; it fails only after `<kind>_retry_seconds` of faults.
    # A worker process that meets the fault pauses taking jobs on the same schedule.
    retry_delay_seconds: float = Field(default=5.0, gt=0)
    retry_max_delay_seconds: float = Field(default=120.0, gt=0)
    storage_retry_seconds: float = Field(default=900.0, ge=0)
    # An image host in trouble (429/503 with Retry-After, unreachable): its images go back
    # to the queue while it cools down, and fail `upstream` only after this long.
    fetch_retry_seconds: float = Field(default=600.0, ge=0)
    # Downloads in flight per image host, shared by every worker process of a machine
    # (fetching.hosts); 0: no limit.
    fetch_per_host: int = Field(default=8, ge=0, le=1024)
    # Final requests are deleted (objects, then rows) this many days after they finished;
    # 0 keeps them forever. Fractions are allowed (0.5 = 12 hours).
    retention_days: float = Field(default=0.0, ge=0)

    # --- webhooks ------------------------------------------------------------
    webhook_url: str | None = Field(
        default=None, validation_alias=AliasChoices("IMGBATCH_WEBHOOK_URL", "WEBHOOK_URL")
    )
    webhook_secret: str | None = None
    webhook_timeout: float = 10.0
    # Attempts in flight per worker process (threads waiting on receivers, cheap): enough
    # that receivers which hang cannot hold them all (webhooks.receivers).
    webhook_senders: int = Field(default=64, ge=1, le=1024)
    webhook_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0]
    )
    webhook_poll_interval: float = 1.0

    @field_validator("cors_origins", "allowed_hosts", "api_keys", mode="before")
    @classmethod
    def _strings(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("default_quality", mode="before")
    @classmethod
    def _quality(cls, value: object) -> object:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 100:
            raise ValueError("must be an integer from 1 to 100, or auto")
        return int(text)

    @field_validator("allowed_ports", "webhook_schedule", mode="before")
    @classmethod
    def _numbers(cls, value: object) -> object:
        return _split_csv(value)

    # --- derived values ------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data dir."""
        return sqlalchemy_url(
            self.database_url or f"sqlite:///{self.data_dir.resolve() / 'imgbatch.db'}"
        )

    @property
    def resolved_queue_url(self) -> str:
        return self.queue_url or f"sqlite:///{self.data_dir.resolve() / 'queue.db'}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.data_dir.resolve() / 'images'}"

    @property
    def resolved_public_base_url(self) -> str:
        base = self.public_base_url or f"http://{self.host}:{self.port}"
        return base.rstrip("/")

    @property
    def worker_concurrency(self) -> int:
        """Image processes per worker: one per core plus one, so a core stays busy while one
        process waits on a download or an fsync (bench/throughput.py: 0.61 → 0.68 of the plain
        loop on 2 cores)."""
        import os

        return self.concurrency or (os.cpu_count() or 1) + 1

    def retry_deadline(self, kind: str) -> float:
        """Seconds of faults of a backend `kind` after which an image fails for it.

        `IMGBATCH_<KIND>_RETRY_SECONDS` when such a setting exists, else the storage one.
        """
        value = getattr(self, f"{kind}_retry_seconds", None)
        return float(value if isinstance(value, int | float) else self.storage_retry_seconds)

    def load_api_keys(self) -> list[str]:
        """Keys from `IMGBATCH_API_KEYS` plus one per line of `IMGBATCH_API_KEYS_FILE`."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            for line in self.api_keys_file.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
        return keys


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
