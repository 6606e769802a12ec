"""Choosing a storage backend by URL: `file:///abs/dir` or `s3://bucket/prefix`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .base import Storage, StorageError, validate_key
from .local import LocalStorage
from .s3 import S3Storage

if TYPE_CHECKING:
    from imgbatch.config import Settings


def open_storage(url: str, settings: Settings | None = None) -> Storage:
    """The storage backend for `url` (`file:///abs/dir` or `s3://bucket/prefix`).

    `settings` supplies S3 endpoint/region/credentials and `public_storage_base_url`;
    defaults to the process settings. No network or disk I/O happens here: call `check()`.
    """
    if settings is None:
        from imgbatch.config import get_settings

        settings = get_settings()
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise StorageError(f"IMGBATCH_STORAGE_URL must not have a query or fragment: {url!r}")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"IMGBATCH_STORAGE_URL file URL must be file:///abs/dir: {url!r}")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise StorageError(f"IMGBATCH_STORAGE_URL needs an absolute path: {url!r}")
        setting = (
            f"IMGBATCH_DATA_DIR={settings.data_dir}"
            if settings.storage_url is None and url == settings.resolved_storage_url
            else f"IMGBATCH_STORAGE_URL={url}"
        )
        return LocalStorage(Path(path), url=url, setting=setting, fsync=settings.storage_fsync)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise StorageError(f"IMGBATCH_STORAGE_URL needs a bucket: s3://bucket/prefix, {url!r}")
        prefix = parts.path.strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except ValueError:
                raise StorageError(f"invalid key prefix in IMGBATCH_STORAGE_URL {url!r}") from None
        return S3Storage(parts.netloc, prefix, settings=settings, url=url)
    raise StorageError(f"unsupported IMGBATCH_STORAGE_URL scheme {parts.scheme!r} (file or s3)")
