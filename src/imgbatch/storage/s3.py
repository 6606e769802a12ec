"""S3-compatible storage (AWS S3, MinIO, Ceph, R2) through boto3."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from imgbatch.config import Settings

from .base import (
    CACHE_CONTROL,
    DEFAULT_CHUNK_SIZE,
    ChunkStream,
    ObjectInfo,
    PutObject,
    Storage,
    StorageError,
    StoredObject,
    _check_chunk_size,
    guess_content_type,
    validate_key,
)

# Uploads in flight at once in one process, whatever the number of worker threads: a
# job's few images go up together, so it should wait about one round trip instead of one
# per image (bench/s3_puts.py). The connection pool has room for them beside reads.
PUT_THREADS = 8
DELETE_BATCH = 1000  # keys per DeleteObjects request: S3's maximum


class S3Storage(Storage):
    """Objects in an S3-compatible bucket under an optional key prefix, through boto3.

    Endpoint, region and credentials come from `settings.s3_*`, else the usual AWS variables
    and credential chain. Path-style addressing is used whenever an endpoint URL is set.
    """

    def __init__(
        self, bucket: str, prefix: str = "", *, settings: Settings, url: str | None = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = url or f"s3://{bucket}/{self.prefix}".rstrip("/")
        base = settings.public_storage_base_url
        self._public_base = base.rstrip("/") if base else None
        env = os.environ
        self.endpoint_url = (
            settings.s3_endpoint_url
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
        )
        region = settings.s3_region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        # Custom endpoints (MinIO, Ceph, moto) still need a SigV4 region; AWS uses the chain.
        self.region = region or ("us-east-1" if self.endpoint_url else None)
        self._access_key = settings.s3_access_key_id or None
        self._secret_key = settings.s3_secret_access_key or None
        if bool(self._access_key) != bool(self._secret_key):
            raise StorageError(
                "set both IMGBATCH_S3_ACCESS_KEY_ID and IMGBATCH_S3_SECRET_ACCESS_KEY, or neither"
            )
        self._pool_size = max(16, settings.worker_concurrency + 4) + PUT_THREADS
        self._lock = threading.Lock()
        self._upload_slots = threading.BoundedSemaphore(PUT_THREADS)
        self._pid = os.getpid()
        try:
            self._client_obj = self._make_client(attempts=5)
        except ValueError as exc:  # botocore's complaint about a malformed endpoint URL
            raise StorageError(f"invalid IMGBATCH_S3_ENDPOINT_URL: {exc}") from exc

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, endpoint={self.endpoint_url!r})"

    def _make_client(self, *, attempts: int) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=self.region,
            connect_timeout=5,
            read_timeout=30,
            retries={"mode": "standard", "total_max_attempts": attempts},
            max_pool_connections=self._pool_size,
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            # Default CRC trailers (aws-chunked) break several S3-compatibles; we send MD5.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra="imgbatch",
        )
        session = boto3.session.Session(
            aws_access_key_id=self._access_key,
            aws_secret_access_key=self._secret_key,
            region_name=self.region,
            botocore_session=_botocore_session(),
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    @property
    def _client(self) -> Any:
        # A client's connection pool must not be shared across fork(); rebuild in the child,
        # with upload slots of its own (the parent's threads may have held some at the fork).
        if os.getpid() != self._pid:
            with self._lock:
                if os.getpid() != self._pid:
                    self._client_obj = self._make_client(attempts=5)
                    self._upload_slots = threading.BoundedSemaphore(PUT_THREADS)
                    self._pid = os.getpid()
        return self._client_obj

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, action: str, key: str, exc: Exception) -> StorageError:
        return StorageError(f"S3 {action} of {key!r} in bucket {self.bucket!r} failed: {exc}")

    def put(self, key: str, data: bytes, content_type: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType=content_type,
                CacheControl=CACHE_CONTROL,
                ContentMD5=md5,  # end-to-end integrity; AWS, MinIO, Ceph and R2 verify it
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._error("put", key, exc) from exc

    def put_many(self, objects: Sequence[PutObject]) -> list[StorageError | None]:
        """Upload the batch in parallel (boto3 clients are thread-safe), in order of outcomes.

        S3 gains nothing from batching durability; what a batch saves is waiting for one
        round trip after another. At most PUT_THREADS uploads run at once in this process,
        so worker threads sharing the client never outgrow its pool.
        """
        for obj in objects:
            validate_key(obj.key)
        if len(objects) < 2:  # no thread to start, but a slot all the same
            return [self._put_in_slot(obj) for obj in objects]
        with ThreadPoolExecutor(min(PUT_THREADS, len(objects)), "s3-put") as pool:
            return list(pool.map(self._put_in_slot, objects))

    def _put_in_slot(self, obj: PutObject) -> StorageError | None:
        self._client  # noqa: B018 - after a fork, rebuild client and slots before taking one
        with self._upload_slots:
            return self._put_outcome(obj)

    def _get_object(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response: dict[str, Any] = self._client.get_object(
                Bucket=self.bucket, Key=self._key(key)
            )
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._error("get", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("get", key, exc) from exc
        return response

    def get(self, key: str) -> StoredObject | None:
        from botocore.exceptions import BotoCoreError

        response = self._get_object(key)
        if response is None:
            return None
        body = response["Body"]
        try:
            data = body.read()
        except BotoCoreError as exc:
            raise self._error("get", key, exc) from exc
        finally:
            body.close()
        info = _s3_info(key, response)
        return StoredObject(key, data, info.content_type, len(data), info.last_modified, info.etag)

    def iter_chunks(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        _check_chunk_size(chunk_size)
        response = self._get_object(key)
        if response is None:
            raise KeyError(key)
        return ChunkStream(response["Body"], chunk_size)

    def stat(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("stat", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("stat", key, exc) from exc
        return _s3_info(key, response)

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._error("delete", key, exc) from exc

    def delete_many(self, keys: Sequence[str]) -> None:
        """DeleteObjects, up to 1,000 keys per request (S3's limit); any per-key error raises."""
        from botocore.exceptions import BotoCoreError, ClientError

        full = [self._key(key) for key in keys]  # ValueError before any deletion
        for start in range(0, len(full), DELETE_BATCH):
            batch = full[start : start + DELETE_BATCH]
            try:
                answer = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            except (BotoCoreError, ClientError) as exc:
                raise self._error("delete", batch[0], exc) from exc
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"S3 delete of {first.get('Key')!r} in bucket {self.bucket!r} failed: "
                    f"{first.get('Code')}: {first.get('Message')} ({len(errors)} keys failed)"
                )

    def list_keys(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        base = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )
            for page in pages:
                keys.extend(item["Key"][len(base) :] for item in page.get("Contents", ()))
        except (BotoCoreError, ClientError) as exc:
            raise self._error("list", prefix, exc) from exc
        return sorted(keys)

    def public_url(self, key: str) -> str | None:
        full = self._key(key)
        return f"{self._public_base}/{quote(full)}" if self._public_base else None

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"{self.url} at {self.endpoint_url or 'AWS'}"
        client = self._make_client(attempts=2)  # fail fast at startup
        try:
            client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError as exc:
            raise StorageError(
                f"no S3 credentials for {where}: set IMGBATCH_S3_ACCESS_KEY_ID and "
                "IMGBATCH_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            ) from exc
        except ClientError as exc:
            code = _error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                msg = f"S3 bucket {self.bucket!r} does not exist ({where}); create it or fix "
                raise StorageError(msg + "IMGBATCH_STORAGE_URL") from exc
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StorageError(
                    f"access to S3 bucket {self.bucket!r} denied ({where}, {code}); check "
                    "IMGBATCH_S3_ACCESS_KEY_ID/IMGBATCH_S3_SECRET_ACCESS_KEY and IMGBATCH_S3_REGION"
                ) from exc
            raise StorageError(f"S3 check of {where} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(
                f"cannot reach S3 for {where}: {exc} (check IMGBATCH_S3_ENDPOINT_URL)"
            ) from exc
        finally:
            client.close()

    def close(self) -> None:
        self._client_obj.close()


_loader: Any = None
_loader_lock = threading.Lock()


def _botocore_session() -> Any:
    """A fresh botocore session (own credential chain) sharing one model loader per process:
    loading the S3 service model is most of the ~50 ms a new session costs."""
    import botocore.session

    global _loader
    session = botocore.session.get_session()
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    return session


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _s3_info(key: str, response: dict[str, Any]) -> ObjectInfo:
    etag = response.get("ETag")
    return ObjectInfo(
        key=key,
        size=int(response.get("ContentLength", 0)),
        content_type=response.get("ContentType") or guess_content_type(key),
        last_modified=response.get("LastModified"),
        etag=etag.strip('"') if etag else None,
    )
