"""Blob storage for compressed images, chosen by URL.

One documented interface, `Storage`, with two backends:

* `file:///abs/dir` -> `LocalStorage` (the default: `<data_dir>/images`), served by the API;
* `s3://bucket/optional/prefix` -> `S3Storage`, any S3-compatible service (AWS, MinIO, Ceph, R2).

`open_storage(url, settings)` picks the backend. Keys are relative `/`-separated paths checked
by `validate_key`, which is also the path-traversal guard for the API's `/files/{key}`.
Backend failures surface as `StorageError`; a missing object is `None` (or `KeyError` from
`iter_chunks`), never an exception of the backend's own kind.
"""

from .base import (
    CACHE_CONTROL,
    ObjectInfo,
    PutObject,
    Storage,
    StorageError,
    StoredObject,
    guess_content_type,
    validate_key,
)
from .factory import open_storage
from .local import LocalStorage
from .s3 import S3Storage

__all__ = [
    "CACHE_CONTROL",
    "LocalStorage",
    "ObjectInfo",
    "PutObject",
    "S3Storage",
    "Storage",
    "StorageError",
    "StoredObject",
    "guess_content_type",
    "open_storage",
    "validate_key",
]
