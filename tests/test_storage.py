"""Fetching from the Cloud Storage emulator and local paths into the cache."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO, upload_dir, upload_file

from cpr_function.errors import LoadError
from cpr_function.loading.storage import Storage


@pytest.fixture
def store(tmp_path, gcs):
    return Storage(tmp_path / "cache", client=gcs)


def test_prefix_is_matched_on_a_folder_boundary(store, bucket):
    bucket.blob("model/a.txt").upload_from_string(b"a")
    bucket.blob("model/sub/b.txt").upload_from_string(b"b")
    bucket.blob("model2/c.txt").upload_from_string(b"c")
    for uri in (f"gs://{bucket.name}/model", f"gs://{bucket.name}/model/"):
        fetched = store.fetch(store.list_directory(uri))
        files = sorted(p.relative_to(fetched.path).as_posix() for p in fetched.path.rglob("*"))
        assert files == ["a.txt", "sub", "sub/b.txt"]
        assert (fetched.path / "sub" / "b.txt").read_bytes() == b"b"


def test_single_object_local_path_and_file_uri(store, bucket, tmp_path):
    bucket.blob("pkgs/p-0.1.tar.gz").upload_from_string(b"archive")
    fetched = store.fetch(store.list_file(f"gs://{bucket.name}/pkgs/p-0.1.tar.gz"))
    assert fetched.path.read_bytes() == b"archive"
    local = tmp_path / "local model"
    local.mkdir()
    (local / "model.pkl").write_bytes(b"m")
    assert store.fetch(store.list_directory(str(local))).path == local
    assert store.fetch(store.list_directory(local.as_uri())).path == local
    with pytest.raises(LoadError, match="is not a directory or does not exist"):
        store.list_directory(str(tmp_path / "absent"))


def test_generations_key_the_cache(store, bucket, tmp_path, gcs):
    uri = upload_dir(bucket, _tree(tmp_path / "src", {"a": b"1", "b": b"2"}), "m")
    first = store.fetch(store.list_directory(uri))
    assert (first.downloaded, first.objects) == (2, 2)

    restarted = Storage(tmp_path / "cache", client=gcs)
    again = restarted.fetch(restarted.list_directory(uri))
    assert (again.downloaded, again.path) == (0, first.path)

    bucket.blob("m/b").upload_from_string(b"22")
    updated = restarted.fetch(restarted.list_directory(uri))
    assert updated.downloaded == 1
    assert updated.path != first.path
    assert (updated.path / "b").read_bytes() == b"22"
    assert (first.path / "b").read_bytes() == b"2", "a model in use is never rewritten"


def test_concurrent_fetches_download_each_object_once(store, bucket, tmp_path):
    uri = upload_dir(bucket, _tree(tmp_path / "src", {f"f{i}": b"x" * i for i in range(8)}), "m")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: store.fetch(store.list_directory(uri)), range(16)))
    assert sum(r.downloaded for r in results) == 8
    assert len({r.path for r in results}) == 1
    assert not list((tmp_path / "cache").rglob(".*partial*")), "no partial entries remain"


def test_object_names_escaping_the_model_directory_are_refused(store, bucket):
    bucket.blob("m/ok").upload_from_string(b"1")
    bucket.blob("m//etc/passwd").upload_from_string(b"1")
    with pytest.raises(LoadError, match=r"cannot be placed in a model directory"):
        store.fetch(store.list_directory(f"gs://{bucket.name}/m"))


def test_empty_directory_and_missing_bucket(store, bucket):
    with pytest.raises(LoadError, match="holds no objects"):
        store.list_directory(f"gs://{bucket.name}/none")
    with pytest.raises(LoadError, match="does not exist"):
        store.list_file(f"gs://{bucket.name}/none.tar.gz")


def _tree(root, files):
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def test_a_corrupt_download_is_refused_and_never_cached(bucket, lying_proxy, tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket.blob("m/model.joblib").upload_from_string(b"the true bytes")
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": lying_proxy.url},
    )
    store = Storage(tmp_path / "cache", client=client)
    listing = store.list_directory(f"gs://{bucket.name}/m")
    with pytest.raises(LoadError, match="is corrupt: expected 14 bytes with CRC32C") as error:
        store.fetch(listing)
    assert error.value.status_code == 503
    assert [p.name for p in (tmp_path / "cache" / "objects").iterdir()] == [".locks"]

    lying_proxy.lie = False
    fetched = store.fetch(listing)
    assert (fetched.path / "model.joblib").read_bytes() == b"the true bytes"


def test_no_google_credentials_says_how_to_get_them(tmp_path, monkeypatch):
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    with pytest.raises(LoadError, match="gcloud auth application-default login"):
        Storage(tmp_path / "cache").list_directory("gs://some-bucket/model")


def test_an_object_that_is_also_a_folder_is_a_clear_error(store, bucket):
    bucket.blob("m/a").upload_from_string(b"file")
    bucket.blob("m/a/b").upload_from_string(b"inside")
    with pytest.raises(LoadError, match="the name 'a' is both an object and a folder"):
        store.fetch(store.list_directory(f"gs://{bucket.name}/m"))


def test_discard_waits_for_every_holder_and_never_touches_local_paths(store, bucket, tmp_path):
    src = _tree(tmp_path / "src", {"a": b"1", "b": b"2"})
    listings = [
        store.list_directory(upload_dir(bucket, src, "m")),
        store.list_file(upload_file(bucket, src / "a", "pkgs/p-0.1.tar.gz")),
        store.list_directory(str(src)),
    ]
    cache = tmp_path / "cache"

    # Nobody holds the cache: removed at once.
    model = store.fetch(listings[0]).path
    store.fetch(listings[1])
    store.discard(listings)
    assert _cached(cache) == []
    assert sorted(p.name for p in src.iterdir()) == ["a", "b"], "a local model stays"

    # Another process holds it (a worker between its download and its from_path).
    code = (
        "import sys; from pathlib import Path; from cpr_function.loading import cache\n"
        "with cache.in_use(Path(sys.argv[1])):\n print('held', flush=True); sys.stdin.readline()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(cache)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert sum(store.fetch(x).downloaded for x in listings) == 3
        with store.in_use():  # and a thread of this one
            store.discard(listings)
            time.sleep(0.3)
            assert (model / "a").read_bytes() == b"1", "kept while held"
        time.sleep(0.3)
        assert (model / "a").read_bytes() == b"1", "kept while another process holds it"
    finally:
        holder.communicate("\n", timeout=30)
    deadline = time.monotonic() + 10
    while _cached(cache) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _cached(cache) == [], "removed when the last holder let go"
    assert store.fetch(listings[0]).downloaded == 2, "fetched again, it is downloaded again"


def _cached(cache) -> list[str]:
    """The entries of the object store and the model folders, partial ones included."""
    return sorted(
        p.name
        for folder in ("objects", "models")
        for p in (cache / folder).iterdir()
        if p.name != ".locks"
    )


@pytest.mark.parametrize("serial", [True, False], ids=["one-at-a-time", "parallel-with-latency"])
def test_downloads_run_as_many_at_once_as_make_them_faster(bucket, lying_proxy, tmp_path, serial):
    """Against a store answering one download at a time (as the emulator does, with a short
    listen queue that 8 connections overflow), no more than 4 are sent at once; against one
    that answers in parallel after 100 ms, as Cloud Storage does after tens of ms, all 8
    are used."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    files = {f"f{i:02d}": os.urandom(2000 + 50 * i) for i in range(80)}
    uri = upload_dir(bucket, _tree(tmp_path / "src", files), "m")
    lying_proxy.lie, lying_proxy.serial, lying_proxy.delay = False, serial, 0.0 if serial else 0.1
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": lying_proxy.url},
    )
    store = Storage(tmp_path / "cache", client=client)
    fetched = store.fetch(store.list_directory(uri))
    assert fetched.downloaded == 80
    assert {p.name: p.read_bytes() for p in fetched.path.iterdir()} == files
    if serial:
        assert lying_proxy.most_at_once <= 4
    else:
        assert lying_proxy.most_at_once == 8


def test_a_fetch_removes_partial_downloads_of_dead_writers_and_keeps_live_ones(
    store, bucket, tmp_path
):
    uri = upload_dir(bucket, _tree(tmp_path / "src", {"a": b"1"}), "m")
    objects = tmp_path / "cache" / "objects"
    (objects / ".locks").mkdir(parents=True)
    dead = objects / ".k1-1.partial-99999-x"
    live = objects / ".k2-1.partial-99998-y"
    dead.write_bytes(b"half of a download whose process was killed")
    live.write_bytes(b"half of a download another process is writing")
    writer = [
        sys.executable,
        "-c",
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n",
        str(objects / ".locks" / "k2-1"),
    ]
    with subprocess.Popen(writer, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout.readline() == "held\n"
            assert store.fetch(store.list_directory(uri)).downloaded == 1
        finally:
            holder.kill()
    assert not dead.exists(), "its writer is gone: an orphan, removed"
    assert live.read_bytes() == b"half of a download another process is writing"
