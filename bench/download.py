"""Fetching a model directory into the cache against plain google-cloud-storage downloads.

Usage: python bench/download.py [--rounds 5] [--files 200] [--megabytes 100] [--delay 0.02]

A gcp-storage-emulator server holds a model directory of many objects of mixed
sizes (random bytes). Each round downloads all of it once per way, each into a
fresh empty directory, the ways in a rotating order so that machine noise falls
on all alike:

- ours: `Storage(cache).fetch(storage.list_directory(uri))` on a cold cache, as a
  cold start does it (listing, checksums, atomic entries, the hard-linked folder),
  up to 8 downloads at a time as ramp.py finds them faster (the default), and
  `parallelism=1`, always one at a time;
- sequential: the loop a user writes, `for blob in client.list_blobs(...):
  blob.download_to_filename(...)`;
- transfer_manager: google-cloud-storage's `download_many_to_path`, 8 workers,
  threads and processes (its default): the strongest plain download.

Every way makes its client and lists. Three servers: the emulator as the tests run
it (one request at a time, 5 connections queued); its code on a threaded server;
and that server answering each GET after --delay seconds, as Cloud Storage's time
to first byte. The directories are on /dev/shm when there is one: on Cloud
Functions the cache is in memory too. Then, on the first server: a second fetch on
the warm cache, and two fetches at once on a cold cache, in two threads and in two
processes, counting downloads with `Fetched.downloaded`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import dir_bytes, emulator  # noqa: E402

from cpr_function.loading.storage import Storage  # noqa: E402

PREFIX = "models/big"


def sizes(files: int, megabytes: float) -> list[int]:
    """Mixed sizes summing to about `megabytes`: a few large files, many small ones.

    In the shares of a typical model directory: 2.5% of the files hold 40% of the
    bytes (weights), 12.5% hold 50% (shards), the rest 10% (vocabularies, configs).
    """
    total = megabytes * 10**6
    big, mid = max(1, files // 40), max(1, files // 8)
    small = files - big - mid
    out = [int(total * 0.4 / big)] * big + [int(total * 0.5 / mid)] * mid
    rng = random.Random(0)
    weights = [rng.uniform(0.2, 1.8) for _ in range(small)]
    out += [max(1, int(total * 0.1 * w / sum(weights))) for w in weights]
    return out


def upload(client, files: int, megabytes: float) -> tuple[str, int]:
    bucket = client.create_bucket("bench-download")
    total = 0
    for i, size in enumerate(sizes(files, megabytes)):
        folder = "variables/" if i % 3 == 0 else "assets/" if i % 3 == 1 else ""
        bucket.blob(f"{PREFIX}/{folder}part-{i:04d}.bin").upload_from_string(os.urandom(size))
        total += size
    return f"gs://{bucket.name}/{PREFIX}", total


def ours(parallelism: int):
    def run(uri: str, dest: Path) -> None:
        storage = Storage(dest, parallelism=parallelism)
        fetched = storage.fetch(storage.list_directory(uri))
        assert fetched.downloaded == fetched.objects, "a cold cache downloads everything"

    return run


def sequential(uri: str, dest: Path) -> None:
    from google.cloud import storage

    client = storage.Client()
    bucket, prefix = uri[len("gs://") :].split("/", 1)
    for blob in client.list_blobs(bucket, prefix=prefix + "/"):
        target = dest / blob.name[len(prefix) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(target)


def transfer_manager(worker_type: str):
    def run(uri: str, dest: Path) -> None:
        from google.cloud import storage
        from google.cloud.storage import transfer_manager

        client = storage.Client()
        bucket_name, prefix = uri[len("gs://") :].split("/", 1)
        names = [b.name[len(prefix) + 1 :] for b in client.list_blobs(bucket_name, prefix=prefix)]
        results = transfer_manager.download_many_to_path(
            client.bucket(bucket_name),
            names,
            destination_directory=str(dest),
            blob_name_prefix=prefix + "/",
            worker_type=worker_type,
            max_workers=8,
        )
        failed = [r for r in results if r is not None]
        assert not failed, failed[0]

    return run


def _fetch_in_process(cache: str, uri: str) -> int:
    storage = Storage(Path(cache))
    return storage.fetch(storage.list_directory(uri)).downloaded


def once_only(uri: str, work: Path, objects: int) -> list[str]:
    lines = []
    cache = work / "once"
    storage = Storage(cache)
    first = storage.fetch(storage.list_directory(uri))
    again = Storage(cache).fetch(Storage(cache).list_directory(uri))
    lines.append(
        f"second fetch on the warm cache: {again.downloaded} of {again.objects} objects "
        f"downloaded (the first: {first.downloaded})"
    )
    shutil.rmtree(cache)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(lambda _: _fetch_in_process(str(cache), uri), range(2)))
    lines.append(
        f"two fetches at once, two threads: {counts[0]} + {counts[1]} = {sum(counts)} "
        f"downloads for {objects} objects"
    )
    shutil.rmtree(cache)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        counts = pool.starmap(_fetch_in_process, [(str(cache), uri)] * 2)
    lines.append(
        f"two fetches at once, two processes: {counts[0]} + {counts[1]} = {sum(counts)} "
        f"downloads for {objects} objects"
    )
    shutil.rmtree(cache)
    return lines


WAYS = {
    "ours": ours(8),
    "ours, one at a time": ours(1),
    "sequential": sequential,
    "transfer_manager threads": transfer_manager("thread"),
    "transfer_manager processes": transfer_manager("process"),
}


def measure(uri: str, total: int, work: Path, rounds: int) -> dict[str, list[float]]:
    """Seconds per round of each way, into a fresh directory each time."""
    for run in WAYS.values():  # once each unmeasured: imports, connections, the server warm
        run(uri, work / "warm")
        shutil.rmtree(work / "warm")
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    names = list(WAYS)
    for r in range(rounds):
        for way in names[r % len(names) :] + names[: r % len(names)]:
            dest = work / f"round-{r}"
            dest.mkdir()
            start = time.perf_counter()
            WAYS[way](uri, dest)
            seconds[way].append(time.perf_counter() - start)
            got = dir_bytes(dest)
            assert got == total, f"{way} wrote {got} bytes of {total}"
            shutil.rmtree(dest)
    return seconds


def table(seconds: dict[str, list[float]], total: int) -> list[str]:
    lines = [f"{'way':>27} {'median s':>9} {'MB/s':>7} {'ours is':>8}"]
    for way, times in seconds.items():
        median = statistics.median(times)
        ratio = statistics.median(
            theirs / mine for mine, theirs in zip(seconds["ours"], times, strict=True)
        )
        lines.append(f"{way:>27} {median:>9.2f} {total / 1e6 / median:>7.1f} {ratio:>7.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--megabytes", type=float, default=100.0)
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    servers = {
        "the emulator as the tests run it": None,
        "its code on a threaded server": 0.0,
        f"its code on a threaded server, {args.delay * 1000:g} ms before each answer": args.delay,
    }
    memory = "/dev/shm" if Path("/dev/shm").is_dir() else None
    out = []
    for i, (server, delay) in enumerate(servers.items()):
        with emulator(delay=delay) as client, tempfile.TemporaryDirectory(dir=memory) as tmp:
            uri, total = upload(client, args.files, args.megabytes)
            seconds = measure(uri, total, Path(tmp), args.rounds)
            out += ["", f"{server}:", *table(seconds, total)]
            if i == 0:
                checks = once_only(uri, Path(tmp), args.files)

    print(
        f"a model directory of {args.files} objects, {total / 1e6:.1f} MB, each way into an "
        f"empty directory, {args.rounds} rounds alternating; 'ours is' = its time / ours"
    )
    for line in out + [""] + checks:
        print(line)


if __name__ == "__main__":
    main()
