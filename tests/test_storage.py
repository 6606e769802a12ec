"""Storage backends: one contract (`StorageContract`) run against local files and S3 (moto).

The S3 tests talk HTTP to a real moto server in a subprocess (`support.s3server`), with dummy
credentials set in the environment the storage reads.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from imgbatch.config import Settings
from imgbatch.storage import (
    CACHE_CONTROL,
    LocalStorage,
    PutObject,
    S3Storage,
    Storage,
    StorageError,
    guess_content_type,
    open_storage,
    validate_key,
)
from imgbatch.storage import s3 as s3_module
from imgbatch.storage.s3 import PUT_THREADS
from support.s3server import SCRUBBED_AWS_VARS, S3Server, dummy_s3_env, start_s3_server

MiB = 1024 * 1024

BAD_KEYS = [
    "",
    "../x",
    "..",
    ".",
    "/abs",
    "/etc/passwd",
    "a//b",
    "a/",
    "a/../b",
    "a/./b",
    "a\\b",
    "..\\x",
    "a\x00b",
    ".hidden",
    "a/.tmp-0123.part",
    "a b.webp",
    "a/b?c",
    "%2e%2e/x",
    "ü.jpg",
    "x" * 513,
    "a/" + "b" * 201,
]
GOOD_KEYS = ["a.webp", "jobs/123/img-1_2.avif", "A/B/c.d.e", "x" * 200, "-_/0"]


def make_settings(**overrides: Any) -> Settings:
    """Settings from the (test-controlled) environment only, never a developer's `.env`."""
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


# --------------------------------------------------------------------------- validate_key


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_validate_key_refuses(key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


def test_validate_key_refuses_non_strings() -> None:
    with pytest.raises(ValueError):
        validate_key(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a.avif", "image/avif"),
        ("a.WEBP", "image/webp"),
        ("a.jpg", "image/jpeg"),
        ("a.png", "image/png"),
        ("a/b.csv", "text/csv"),
        ("noext", "application/octet-stream"),
    ],
)
def test_guess_content_type(key: str, expected: str) -> None:
    assert guess_content_type(key) == expected


# --------------------------------------------------------------------------- open_storage


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "file://relative/dir",
        "file:relative/dir",
        "file:///abs/dir?mode=1",
        "s3://",
        "s3:///prefix",
        "s3://bucket/../x",
        "s3://bucket/a//b",
        "s3://bucket/p?region=x",
    ],
)
def test_open_storage_refuses_bad_urls(url: str) -> None:
    with pytest.raises(StorageError, match="IMGBATCH_STORAGE_URL"):
        open_storage(url, make_settings())


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"s3_endpoint_url": "not a url"}, "IMGBATCH_S3_ENDPOINT_URL"),
        ({"s3_access_key_id": "id", "s3_secret_access_key": None}, "IMGBATCH_S3_SECRET_ACCESS_KEY"),
    ],
)
def test_open_storage_refuses_bad_s3_settings(overrides: dict[str, str], setting: str) -> None:
    with pytest.raises(StorageError, match=setting):
        open_storage("s3://bkt", make_settings(**overrides))


def test_open_storage_file_url(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "with space").as_uri(), make_settings())
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "with space"


def test_open_storage_s3_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    storage = open_storage("s3://bkt/a/b/", make_settings(s3_endpoint_url="http://127.0.0.1:9"))
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == ("bkt", "a/b")
    storage.close()


# --------------------------------------------------------------------------- the contract


class StorageContract:
    """Every backend must pass these. Subclasses provide a `storage` fixture (an empty store)."""

    def test_put_get_round_trip(self, storage: Storage) -> None:
        data = os.urandom(3000)
        storage.put("jobs/1/a.webp", data, "image/webp")
        obj = storage.get("jobs/1/a.webp")
        assert obj is not None
        assert (obj.key, obj.data, obj.size, obj.content_type) == (
            "jobs/1/a.webp",
            data,
            3000,
            "image/webp",
        )
        assert obj.last_modified is not None
        assert abs(obj.last_modified - datetime.now(UTC)) < timedelta(minutes=5)

    @pytest.mark.parametrize(
        ("key", "content_type"),
        [("x.avif", "image/avif"), ("x.jpg", "image/jpeg"), ("d/x.png", "image/png")],
    )
    def test_content_type_kept(self, storage: Storage, key: str, content_type: str) -> None:
        storage.put(key, b"img", content_type)
        obj = storage.get(key)
        info = storage.stat(key)
        assert obj is not None and info is not None
        assert obj.content_type == info.content_type == content_type

    def test_empty_object(self, storage: Storage) -> None:
        storage.put("empty.webp", b"", "image/webp")
        obj = storage.get("empty.webp")
        assert obj is not None and obj.data == b"" and obj.size == 0
        assert list(storage.iter_chunks("empty.webp")) == []
        assert storage.exists("empty.webp")

    def test_overwrite_same_key(self, storage: Storage) -> None:
        storage.put("k/a.webp", b"first version, longer", "image/webp")
        storage.put("k/a.webp", b"second", "image/webp")
        obj = storage.get("k/a.webp")
        info = storage.stat("k/a.webp")
        assert obj is not None and obj.data == b"second"
        assert info is not None and info.size == 6
        assert storage.list_keys() == ["k/a.webp"]

    def test_iter_chunks_streams_large_object(self, storage: Storage) -> None:
        data = os.urandom(5 * MiB + 123)
        storage.put("big/photo.avif", data, "image/avif")
        chunk_size = 64 * 1024
        chunks = list(storage.iter_chunks("big/photo.avif", chunk_size))
        assert b"".join(chunks) == data
        assert all(0 < len(c) <= chunk_size for c in chunks)
        assert len(chunks) >= len(data) // chunk_size
        assert b"".join(storage.iter_chunks("big/photo.avif")) == data  # default size

    def test_iter_chunks_missing_raises_before_iterating(self, storage: Storage) -> None:
        with pytest.raises(KeyError):
            storage.iter_chunks("missing/x.webp")  # not iterated: the API needs to know first

    def test_iter_chunks_close_early(self, storage: Storage) -> None:
        storage.put("c.webp", b"0123456789" * 1000, "image/webp")
        stream = storage.iter_chunks("c.webp", 100)
        assert next(stream) == b"0123456789" * 10
        stream.close()  # type: ignore[attr-defined]
        assert list(stream) == []
        obj = storage.get("c.webp")  # the store is still usable
        assert obj is not None and obj.size == 10_000

    def test_iter_chunks_refuses_bad_chunk_size(self, storage: Storage) -> None:
        storage.put("c.webp", b"x", "image/webp")
        with pytest.raises(ValueError):
            storage.iter_chunks("c.webp", 0)

    def test_missing_key(self, storage: Storage) -> None:
        assert storage.get("nope/x.webp") is None
        assert storage.stat("nope/x.webp") is None
        assert storage.exists("nope/x.webp") is False
        storage.delete("nope/x.webp")  # idempotent, no error
        assert storage.list_keys("nope") == []

    def test_stat_exists_delete(self, storage: Storage) -> None:
        storage.put("s/a.webp", b"12345", "image/webp")
        info = storage.stat("s/a.webp")
        assert info is not None
        assert (info.key, info.size, info.content_type) == ("s/a.webp", 5, "image/webp")
        assert info.etag
        assert storage.exists("s/a.webp")
        storage.delete("s/a.webp")
        assert not storage.exists("s/a.webp")
        assert storage.get("s/a.webp") is None
        assert storage.list_keys() == []
        storage.delete("s/a.webp")  # twice is fine

    def test_delete_many_removes_each_key_and_tolerates_missing_ones(
        self, storage: Storage
    ) -> None:
        keys = [f"req/{serial}/{position}.jpg" for serial in (1, 2) for position in (0, 1)]
        for key in [*keys, "other/1/0.jpg"]:
            storage.put(key, b"x" * 10, "image/jpeg")
        storage.delete_many([*keys[:3], "req/9/9.jpg"])  # one never existed
        assert storage.list_keys() == ["other/1/0.jpg", "req/2/1.jpg"]
        storage.delete_many(keys)  # again, after a crash: the rest goes, the gone stay gone
        assert storage.list_keys() == ["other/1/0.jpg"]
        assert storage.get("req/2/1.jpg") is None
        storage.delete_many([])
        assert storage.list_keys() == ["other/1/0.jpg"]

    def test_delete_many_refuses_a_bad_key_before_deleting_anything(self, storage: Storage) -> None:
        storage.put("keep/1.jpg", b"x", "image/jpeg")
        with pytest.raises(ValueError):
            storage.delete_many(["keep/1.jpg", "../escape.jpg"])
        assert storage.list_keys() == ["keep/1.jpg"]

    def test_a_directory_is_not_an_object(self, storage: Storage) -> None:
        storage.put("dir/a.webp", b"x", "image/webp")
        assert storage.stat("dir") is None
        assert storage.get("dir") is None
        assert not storage.exists("dir")

    def test_list_keys_with_prefix(self, storage: Storage) -> None:
        for key in ["a/1.webp", "a/2.webp", "ab/3.webp", "b/4.webp", "top.webp"]:
            storage.put(key, b"x", "image/webp")
        assert storage.list_keys() == ["a/1.webp", "a/2.webp", "ab/3.webp", "b/4.webp", "top.webp"]
        assert storage.list_keys("a/") == ["a/1.webp", "a/2.webp"]
        assert storage.list_keys("a") == ["a/1.webp", "a/2.webp", "ab/3.webp"]
        assert storage.list_keys("b/4") == ["b/4.webp"]
        assert storage.list_keys("t") == ["top.webp"]
        assert storage.list_keys("zzz") == []

    @pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
    def test_every_method_refuses_bad_keys(self, storage: Storage, key: str) -> None:
        calls = [
            lambda: storage.put(key, b"x", "image/webp"),
            lambda: storage.get(key),
            lambda: storage.iter_chunks(key),
            lambda: storage.stat(key),
            lambda: storage.exists(key),
            lambda: storage.delete(key),
            lambda: storage.public_url(key),
        ]
        for call in calls:
            with pytest.raises(ValueError):
                call()
        assert storage.list_keys() == []

    def test_public_url_none_without_public_base(self, storage: Storage) -> None:
        storage.put("p/a.webp", b"x", "image/webp")
        assert storage.public_url("p/a.webp") is None

    def test_check_passes(self, storage: Storage) -> None:
        storage.check()
        assert storage.list_keys() == []  # check leaves nothing behind

    def test_concurrent_puts_of_one_key_leave_one_complete_object(self, storage: Storage) -> None:
        payloads = [bytes([i]) * (MiB + i) for i in range(8)]
        seen: list[bytes | None] = []
        done = threading.Event()
        errors: list[BaseException] = []

        def writer(data: bytes) -> None:
            try:
                for _ in range(3):
                    storage.put("race/img.webp", data, "image/webp")
            except BaseException as exc:
                errors.append(exc)

        def reader() -> None:
            while not done.is_set():
                obj = storage.get("race/img.webp")
                seen.append(None if obj is None else obj.data)

        reading = threading.Thread(target=reader)
        reading.start()
        writers = [threading.Thread(target=writer, args=(p,)) for p in payloads]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        done.set()
        reading.join()

        assert errors == []
        final = storage.get("race/img.webp")
        assert final is not None and final.data in payloads
        assert final.size == len(final.data)
        assert storage.list_keys() == ["race/img.webp"]
        assert seen, "the reader never ran"
        assert all(d is None or d in payloads for d in seen), "a reader saw a partial object"

    # --------------------------------------------------------------------------- local files

    def test_put_many_stores_each_object(self, storage: Storage) -> None:
        objects = [PutObject(f"r/{i}/0.jpg", bytes([i]) * 10, "image/jpeg") for i in range(3)]
        assert storage.put_many(objects) == [None, None, None]
        assert [storage.get(o.key).data for o in objects] == [o.data for o in objects]  # type: ignore[union-attr]

    def test_put_many_refuses_a_bad_key_before_writing_anything(self, storage: Storage) -> None:
        good, bad = (
            PutObject("good/1.jpg", b"x", "image/jpeg"),
            PutObject("../b.jpg", b"x", "image/jpeg"),
        )
        with pytest.raises(ValueError):
            storage.put_many([good, bad])
        assert storage.list_keys() == []


class TestLocalStorage(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> LocalStorage:
        storage = open_storage((tmp_path / "images").as_uri(), make_settings())
        assert isinstance(storage, LocalStorage)
        return storage

    def test_delete_many_prunes_the_directories_it_empties(self, storage: LocalStorage) -> None:
        storage.check()  # creates the root
        for key in ("r1/1/0.jpg", "r1/2/0.jpg", "r1/2/1.jpg", "r2/1/0.jpg"):
            storage.put(key, b"x", "image/jpeg")
        storage.delete_many(["r1/1/0.jpg", "r1/2/0.jpg"])
        assert not (storage.root / "r1" / "1").exists()  # emptied: removed
        assert (storage.root / "r1" / "2" / "1.jpg").is_file()  # still holds an object
        storage.delete_many(["r1/2/1.jpg"])
        assert not (storage.root / "r1").exists()
        assert (storage.root / "r2" / "1" / "0.jpg").is_file()
        storage.delete_many(["r2/1/0.jpg"])
        assert storage.root.is_dir() and list(storage.root.iterdir()) == []  # the root stays

    def test_put_many_fails_only_the_object_that_could_not_be_written(
        self, storage: Storage
    ) -> None:
        storage.put("taken", b"a file where a directory is needed", "application/octet-stream")
        outcomes = storage.put_many(
            [
                PutObject("ok/1.jpg", b"one", "image/jpeg"),
                PutObject("taken/2.jpg", b"two", "image/jpeg"),
                PutObject("ok/3.jpg", b"three", "image/jpeg"),
            ]
        )
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], StorageError)
        assert storage.get("ok/3.jpg").data == b"three"  # type: ignore[union-attr]

    def test_put_leaves_no_temp_files(self, storage: LocalStorage) -> None:
        storage.put("a/b/c.webp", b"data", "image/webp")
        storage.put("a/b/c.webp", b"data2", "image/webp")
        assert sorted(os.listdir(storage.root / "a" / "b")) == ["c.webp"]
        assert (storage.root / "a" / "b" / "c.webp").read_bytes() == b"data2"

    def test_failed_put_cleans_up_and_keeps_old_object(self, storage: LocalStorage) -> None:
        storage.put("f.webp", b"old", "image/webp")
        with pytest.raises(TypeError):
            storage.put("f.webp", object(), "image/webp")  # type: ignore[arg-type]
        assert os.listdir(storage.root) == ["f.webp"]
        assert (storage.root / "f.webp").read_bytes() == b"old"

    def test_list_keys_skips_writes_in_progress(self, storage: LocalStorage) -> None:
        storage.put("a/x.webp", b"x", "image/webp")
        (storage.root / "a" / ".tmp-deadbeef.part").write_bytes(b"partial")
        assert storage.list_keys() == ["a/x.webp"]

    def test_files_honour_umask(self, storage: LocalStorage) -> None:
        umask = os.umask(0o022)
        try:
            storage.put("m.webp", b"x", "image/webp")
        finally:
            os.umask(umask)
        assert (storage.root / "m.webp").stat().st_mode & 0o777 == 0o644

    def test_symlink_out_of_root_is_refused(self, storage: LocalStorage, tmp_path: Path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        storage.root.mkdir()
        (storage.root / "link").symlink_to(outside, target_is_directory=True)
        with pytest.raises(ValueError, match="escapes"):
            storage.put("link/x.webp", b"x", "image/webp")
        with pytest.raises(ValueError, match="escapes"):
            storage.get("link/x.webp")
        assert list(outside.iterdir()) == []

    def test_key_under_an_object_is_a_storage_error(self, storage: LocalStorage) -> None:
        storage.put("a.webp", b"x", "image/webp")
        with pytest.raises(StorageError, match="cannot write"):
            storage.put("a.webp/b.webp", b"y", "image/webp")

    def test_public_url_is_none_even_with_public_base(self, tmp_path: Path) -> None:
        settings = make_settings(public_storage_base_url="https://cdn.example.com")
        storage = open_storage(tmp_path.as_uri(), settings)
        assert storage.public_url("a/b.webp") is None

    def test_check_creates_missing_root(self, storage: LocalStorage) -> None:
        assert not storage.root.exists()
        storage.check()
        assert storage.root.is_dir()
        assert os.listdir(storage.root) == []

    def test_check_fails_when_parent_missing(self, tmp_path: Path) -> None:
        url = (tmp_path / "not-mounted" / "images").as_uri()
        storage = open_storage(url, make_settings(storage_url=url))
        with pytest.raises(StorageError, match="no parent directory") as info:
            storage.check()
        assert "IMGBATCH_STORAGE_URL" in str(info.value) and "\n" not in str(info.value)
        assert not (tmp_path / "not-mounted").exists()

    def test_check_names_data_dir_for_the_default_location(self, tmp_path: Path) -> None:
        settings = make_settings(data_dir=tmp_path / "missing-data")
        storage = open_storage(settings.resolved_storage_url, settings)
        with pytest.raises(StorageError, match="IMGBATCH_DATA_DIR"):
            storage.check()

    def test_check_fails_when_root_is_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_bytes(b"")
        storage = open_storage((tmp_path / "file").as_uri(), make_settings())
        with pytest.raises(StorageError, match="not a directory"):
            storage.check()

    def test_check_fails_on_a_directory_nobody_can_write(self) -> None:
        # Even root cannot create files in /proc, so this runs in containers too.
        with pytest.raises(StorageError, match=r"not writable.*IMGBATCH_STORAGE_URL=file:///proc"):
            open_storage("file:///proc", make_settings()).check()


# --------------------------------------------------------------------------- S3 on moto


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy credentials and the moto endpoint in this process's environment."""
    for name in SCRUBBED_AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    env = dummy_s3_env(s3_server.endpoint_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def bucket(s3_server: S3Server, s3_env: dict[str, str]) -> str:
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3_server.create_bucket(name)
    return name


class TestS3Storage(StorageContract):
    @pytest.fixture(params=["", "tenant/images"], ids=["no-prefix", "prefix"])
    def storage(self, request: pytest.FixtureRequest, bucket: str) -> Iterator[S3Storage]:
        storage = open_storage(f"s3://{bucket}/{request.param}", make_settings())
        assert isinstance(storage, S3Storage)
        yield storage
        storage.close()

    def test_delete_many_sends_batches_of_the_s3_maximum(
        self, storage: S3Storage, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(s3_module, "DELETE_BATCH", 3)  # 7 keys: 3 requests, as 2,001 would
        keys = [f"r/{i}/0.jpg" for i in range(7)]
        storage.put_many([PutObject(key, b"x", "image/jpeg") for key in keys])
        calls: list[int] = []
        client = storage._client
        real = client.delete_objects

        def counting(**kwargs: Any) -> Any:
            calls.append(len(kwargs["Delete"]["Objects"]))
            return real(**kwargs)

        monkeypatch.setattr(client, "delete_objects", counting)
        storage.delete_many([*keys[:6], "r/99/0.jpg"])
        assert calls == [3, 3, 1]
        full = f"{storage.prefix}/" if storage.prefix else ""
        pages = s3_server.client().list_objects_v2(Bucket=storage.bucket)
        assert [item["Key"] for item in pages.get("Contents", [])] == [f"{full}r/6/0.jpg"]

    def test_put_sets_headers_and_prefix(self, storage: S3Storage, s3_server: S3Server) -> None:
        storage.put("a/b.webp", b"x", "image/webp")
        full = f"{storage.prefix}/a/b.webp" if storage.prefix else "a/b.webp"
        head = s3_server.client().head_object(Bucket=storage.bucket, Key=full)
        assert head["CacheControl"] == CACHE_CONTROL
        assert head["ContentType"] == "image/webp"

    def test_public_url_with_public_base(self, storage: S3Storage) -> None:
        settings = make_settings(public_storage_base_url="https://cdn.example.com/assets/")
        public = open_storage(storage.url, settings)
        full = f"{storage.prefix}/a/b.webp" if storage.prefix else "a/b.webp"
        assert public.public_url("a/b.webp") == f"https://cdn.example.com/assets/{full}"

    def test_put_many_uploads_a_batch_in_parallel(
        self, storage: S3Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        objects = [
            PutObject(f"r/{i}/0.webp", bytes([i]) * (1000 + i), "image/webp")
            for i in range(PUT_THREADS + 4)  # more objects than threads
        ]
        # The first two uploads each wait for the other: one after another, the first would
        # break the barrier at its timeout (and fail) instead of passing it with the second.
        meet = threading.Barrier(2, timeout=10)
        calls: list[str] = []
        real_put = storage.put

        def put(key: str, data: bytes, content_type: str) -> None:
            calls.append(key)
            if key in (objects[0].key, objects[1].key):
                meet.wait()
            real_put(key, data, content_type)

        monkeypatch.setattr(storage, "put", put)
        assert storage.put_many(objects) == [None] * len(objects)
        assert sorted(calls) == sorted(o.key for o in objects)
        for obj in objects:
            stored = storage.get(obj.key)
            assert stored is not None and stored.data == obj.data
            assert stored.content_type == "image/webp"

    def test_put_many_keeps_outcomes_in_input_order(
        self, storage: S3Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The first object fails last: its upload waits until the last one has been made.
        last_done = threading.Event()
        real_put = storage.put

        def put(key: str, data: bytes, content_type: str) -> None:
            if key == "r/0.jpg":
                assert last_done.wait(10)
                raise StorageError("first, and finished last")
            real_put(key, data, content_type)
            if key == "r/4.jpg":
                last_done.set()

        monkeypatch.setattr(storage, "put", put)
        outcomes = storage.put_many([PutObject(f"r/{i}.jpg", b"x", "image/jpeg") for i in range(5)])
        assert isinstance(outcomes[0], StorageError) and outcomes[1:] == [None] * 4

    def test_batches_of_concurrent_workers_share_the_upload_slots(
        self, storage: S3Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Worker threads storing batches (and single objects) at once must not have more
        # uploads in flight than PUT_THREADS, or they would outgrow the client's pool.
        lock = threading.Lock()
        in_flight = peak = 0
        real_put = storage.put

        def put(key: str, data: bytes, content_type: str) -> None:
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            try:
                time.sleep(0.05)  # long enough for the other batch's uploads to start
                real_put(key, data, content_type)
            finally:
                with lock:
                    in_flight -= 1

        monkeypatch.setattr(storage, "put", put)
        batches = [
            [PutObject(f"w{w}/{i}.jpg", b"x", "image/jpeg") for i in range(PUT_THREADS)]
            for w in range(3)
        ] + [[PutObject(f"one/{w}.jpg", b"x", "image/jpeg")] for w in range(PUT_THREADS)]
        results: list[list[StorageError | None]] = []
        workers = [
            threading.Thread(target=lambda b=b: results.append(storage.put_many(b)))
            for b in batches
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert sorted(results) == sorted([None] * len(b) for b in batches)
        assert 2 <= peak <= PUT_THREADS
        assert len(storage.list_keys()) == 4 * PUT_THREADS

    def test_put_many_fails_only_the_object_whose_upload_failed(
        self, storage: S3Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # moto accepts every well-formed put, so the failures are raised in the upload
        # threads around the real server: a storage error and a surprise.
        real_put = storage.put

        def put(key: str, data: bytes, content_type: str) -> None:
            if key == "bad/2.jpg":
                raise StorageError("S3 put of 'bad/2.jpg' failed: SlowDown")
            if key == "bug/4.jpg":
                raise RuntimeError("surprise")
            real_put(key, data, content_type)

        monkeypatch.setattr(storage, "put", put)
        keys = ["ok/1.jpg", "bad/2.jpg", "ok/3.jpg", "bug/4.jpg", "ok/5.jpg"]
        outcomes = storage.put_many([PutObject(k, k.encode(), "image/jpeg") for k in keys])
        assert [type(o).__name__ for o in outcomes] == [
            "NoneType",
            "StorageError",
            "NoneType",
            "StorageError",
            "NoneType",
        ]
        assert "SlowDown" in str(outcomes[1]) and "surprise" in str(outcomes[3])
        assert storage.list_keys() == ["ok/1.jpg", "ok/3.jpg", "ok/5.jpg"]

    def test_prefixes_are_isolated(self, bucket: str) -> None:
        one = open_storage(f"s3://{bucket}/one", make_settings())
        two = open_storage(f"s3://{bucket}/two", make_settings())
        one.put("x.webp", b"1", "image/webp")
        two.put("x.webp", b"2", "image/webp")
        assert one.list_keys() == ["x.webp"]
        obj = one.get("x.webp")
        assert obj is not None and obj.data == b"1"
        root = open_storage(f"s3://{bucket}", make_settings())
        assert root.list_keys() == ["one/x.webp", "two/x.webp"]

    def test_check_reports_missing_bucket(self, s3_env: dict[str, str]) -> None:
        storage = open_storage("s3://no-such-bucket-here/p", make_settings())
        with pytest.raises(StorageError, match="does not exist") as info:
            storage.check()
        message = str(info.value)
        assert "no-such-bucket-here" in message and "IMGBATCH_STORAGE_URL" in message
        assert "\n" not in message

    def test_put_does_not_create_the_bucket(
        self, s3_env: dict[str, str], s3_server: S3Server
    ) -> None:
        storage = open_storage("s3://never-created-bucket", make_settings())
        with pytest.raises(StorageError):
            storage.put("a.webp", b"x", "image/webp")
        names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
        assert "never-created-bucket" not in names

    def test_check_reports_unreachable_endpoint(self, s3_env: dict[str, str]) -> None:
        import socket

        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        settings = make_settings(s3_endpoint_url=f"http://127.0.0.1:{port}")
        with pytest.raises(StorageError, match="IMGBATCH_S3_ENDPOINT_URL"):
            open_storage("s3://any-bucket", settings).check()

    def test_settings_win_over_aws_variables(
        self, bucket: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # would fail if used
        monkeypatch.setenv("AWS_REGION", "eu-west-3")
        storage = open_storage(f"s3://{bucket}", make_settings())
        assert isinstance(storage, S3Storage) and storage.region == "us-east-1"
        storage.put("a.webp", b"x", "image/webp")
        assert storage.exists("a.webp")

    def test_falls_back_to_aws_variables(
        self, bucket: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in list(os.environ):
            if name.startswith("IMGBATCH_S3_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")  # AWS_REGION wins
        storage = open_storage(f"s3://{bucket}", make_settings())
        assert isinstance(storage, S3Storage)
        assert (storage.endpoint_url, storage.region) == (s3_server.endpoint_url, "us-east-1")
        storage.put("a.webp", b"x", "image/webp")
        obj = storage.get("a.webp")
        assert obj is not None and obj.data == b"x"

    def test_forked_child_gets_its_own_client(self, storage: S3Storage) -> None:
        storage.put("f.webp", b"forked", "image/webp")
        parent_client = storage._client
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                obj = storage.get("f.webp")
                fresh = storage._client is not parent_client
                code = 0 if fresh and obj is not None and obj.data == b"forked" else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert storage._client is parent_client


@pytest.mark.parametrize("fsync", [True, False])
def test_local_durability_follows_the_setting(
    tmp_path: Path, fsync: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    root = tmp_path / "images"
    root.mkdir()
    storage = open_storage(root.as_uri(), make_settings(storage_fsync=fsync))
    for name in ("0.jpg", "1.jpg"):  # into new directories, then into existing ones
        synced.clear()
        storage.put(f"r/1/{name}", b"bytes", "image/jpeg")
        assert storage.get(f"r/1/{name}") is not None
        if not fsync:
            assert synced == []
            continue
        # The data in its temp file (before the rename), then every directory up to the
        # root: one of them may have been created by another process.
        temp = Path(synced[0])
        assert temp.parent == root / "r/1" and temp.name.startswith(".tmp-")
        assert synced[1:] == [str(root / "r/1"), str(root / "r"), str(root)]


def test_local_batch_is_synced_before_it_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("rename", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    storage = open_storage(tmp_path.as_uri(), make_settings(storage_fsync=True))
    outcomes = storage.put_many(
        [PutObject(f"r/{i}/0.jpg", b"x" * i, "image/jpeg") for i in range(1, 4)]
    )
    assert outcomes == [None, None, None]
    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    assert len(renames) == 3
    for i in renames:  # every temp file was synced before it took its key
        assert ("fsync", events[i][1]) in events[:i]
    directories = [path for kind, path in events[renames[-1] + 1 :]]
    assert all(kind == "fsync" for kind, _ in events[renames[-1] + 1 :])
    assert set(directories) == {str(tmp_path / f"r/{i}") for i in range(1, 4)} | {
        str(tmp_path / "r"),
        str(tmp_path),
    }
    assert [storage.get(f"r/{i}/0.jpg").data for i in range(1, 4)] == [b"x", b"xx", b"xxx"]  # type: ignore[union-attr]


def test_local_object_whose_sync_fails_keeps_its_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_storage(tmp_path.as_uri(), make_settings(storage_fsync=True))
    storage.put("r/1/0.jpg", b"old", "image/jpeg")
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".tmp-"):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)
    (outcome,) = storage.put_many([PutObject("r/1/0.jpg", b"new", "image/jpeg")])
    assert isinstance(outcome, StorageError) and "Input/output error" in str(outcome)
    assert storage.get("r/1/0.jpg").data == b"old"  # type: ignore[union-attr]
    assert os.listdir(tmp_path / "r/1") == ["0.jpg"]  # no temp file left behind
