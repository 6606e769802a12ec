"""Blob storage for compressed images, chosen by URL.

One documented interface, `Storage`, with two backends:

* `file:///abs/dir` -> `LocalStorage` (the default: `<data_dir>/images`), served by the API;
* `s3://bucket/optional/prefix` -> `S3Storage`, any S3-compatible service (AWS, MinIO, Ceph, R2).

`open_storage(url, settings)` picks the backend. Keys are relative `/`-separated paths checked
by `validate_key`, which is also the path-traversal guard for the API's `/files/{key}`.
Backend failures surface as `StorageError`; a missing object is `None` (or `KeyError` from
`iter_chunks`), never an exception of the backend's own kind.
"""

from __future__ import annotations

import mimetypes
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

MAX_KEY_LENGTH = 512
MAX_SEGMENT_LENGTH = 200
DEFAULT_CHUNK_SIZE = 64 * 1024
# Objects are content-addressed per job and never rewritten with different bytes.
CACHE_CONTROL = "public, max-age=31536000, immutable"
# A segment may not start with "." -- that rules out ".", "..", hidden files and our temp files.
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_TMP_PREFIX, _TMP_SUFFIX = ".tmp-", ".part"
# Not left to the platform's mime.types, which differs between hosts and may lack these.
_CONTENT_TYPES = {
    ".avif": "image/avif",
    ".webp": "image/webp",
    ".jxl": "image/jxl",
    ".heic": "image/heic",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".csv": "text/csv",
    ".json": "application/json",
    ".zip": "application/zip",
}


class StorageError(Exception):
    """The store is unreachable, misconfigured or refused an operation (one-line message)."""


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata of a stored object. `etag` is an opaque validator (quoted form not included)."""

    key: str
    size: int
    content_type: str
    last_modified: datetime | None = None
    etag: str | None = None


@dataclass(frozen=True)
class StoredObject:
    """A whole object read into memory; use `Storage.iter_chunks` to stream large ones."""

    key: str
    data: bytes
    content_type: str
    size: int
    last_modified: datetime | None = None
    etag: str | None = None


@dataclass(frozen=True)
class PutObject:
    """One object to store with `Storage.put_many`."""

    key: str
    data: bytes
    content_type: str


def validate_key(key: str) -> str:
    """Return `key` if it is a safe storage key, else raise `ValueError`.

    A key is relative and `/`-separated; each segment is made of `[A-Za-z0-9._-]`, does not
    start with `.` (so no `.`/`..`, hidden or temp files) and is at most 200 characters; the
    whole key is at most 512. No leading `/`, no empty segments, no backslashes or NULs.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("storage key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"storage key longer than {MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if len(segment) > MAX_SEGMENT_LENGTH or not _SEGMENT.fullmatch(segment):
            raise ValueError(f"invalid storage key {key[:80]!r}")
    return key


def guess_content_type(key: str) -> str:
    """The MIME type for a key's extension (`application/octet-stream` when unknown)."""
    ext = os.path.splitext(key)[1].lower()
    return _CONTENT_TYPES.get(ext) or mimetypes.guess_type(key)[0] or "application/octet-stream"


class ChunkStream(Iterator[bytes]):
    """Iterator over an already-open binary stream; closes it when exhausted or on `close()`."""

    def __init__(self, stream: Any, chunk_size: int) -> None:
        self._stream: Any = stream
        self._chunk_size = chunk_size

    def __next__(self) -> bytes:
        if self._stream is None:
            raise StopIteration
        try:
            chunk = self._stream.read(self._chunk_size)
        except BaseException:
            self.close()
            raise
        if not chunk:
            self.close()
            raise StopIteration
        return bytes(chunk)

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def __del__(self) -> None:
        self.close()


class Storage(ABC):
    """A blob store holding compressed images under validated keys.

    Implementations are safe to share between threads. Open one per process (after fork).
    """

    url: str

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key` atomically: readers see the old object or the new one,
        never a partial one. Overwriting is allowed, so retried writes are idempotent."""

    def put_many(self, objects: Sequence[PutObject]) -> list[StorageError | None]:
        """Store several objects as `put` would, each durable on return; one outcome per
        object (`None` when stored), so one failed write fails only its own image.

        Invalid keys raise `ValueError` before anything is written. Backends override this
        when a batch is cheaper than object by object: local files share their fsyncs, S3
        uploads overlap their round trips.
        """
        for obj in objects:
            validate_key(obj.key)
        return [self._put_outcome(obj) for obj in objects]

    def _put_outcome(self, obj: PutObject) -> StorageError | None:
        """`put` one object of a batch; its failure is returned, not raised."""
        try:
            self.put(obj.key, obj.data, obj.content_type)
        except StorageError as exc:
            return exc
        except Exception as exc:  # one object's surprise must not fail the others
            return StorageError(f"cannot store {obj.key!r}: {exc}")
        return None

    @abstractmethod
    def get(self, key: str) -> StoredObject | None:
        """The whole object, or `None` if there is no object under `key`."""

    @abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Open `key` now (raising `KeyError` if missing) and return an iterator of chunks of
        at most `chunk_size` bytes. The iterator has `close()`; it closes itself at the end."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size, content type and last-modified time of `key`, or `None` if missing."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        return self.stat(key) is not None

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing key is not an error."""

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove every key; missing keys are not an error, so a repeated call is harmless.

        Every key is validated before anything is deleted (`ValueError`). A backend failure
        raises `StorageError` (some keys may be gone already: call again). Backends override
        this when a batch is cheaper: local files prune the directories they empty, S3
        deletes up to 1,000 keys per request.
        """
        for key in keys:
            validate_key(key)
        for key in keys:
            self.delete(key)

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Sorted keys starting with the string `prefix` (not only whole segments)."""

    @abstractmethod
    def public_url(self, key: str) -> str | None:
        """An absolute URL where `key` is publicly reachable, or `None`, meaning the API serves
        it at `/files/{key}`. Never a presigned (expiring) URL: these end up in CSVs."""

    @abstractmethod
    def check(self) -> None:
        """Raise `StorageError` naming the setting to fix when the store is unusable."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections; the storage must not be used afterwards."""


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
