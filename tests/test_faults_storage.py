"""Storage faults through real parts: cold starts all at once, SIGKILL mid-fetch, outages, rewrites.

Every test prints what it counted (`pytest -s` shows it). The storage server is the
emulator behind `StorageProxy`, a loopback HTTP server that counts, slows, cuts,
corrupts and rewrites object downloads. `CPR_SOAK=1` runs the randomized tests ten
times longer (200 kills, 200 rewrites) and waits out a whole retry window through the
function: `CPR_SOAK=1 .venv/bin/python -m pytest -s tests/test_faults_storage.py`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import http.server
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import requests
from conftest import IRIS, REPO, counting_env, iris_expected, make_tar, upload_file, version_status
from kit_source import kit_files

from cpr_function.loading.gcs import ObjectChanged, StorageUnavailable
from cpr_function.loading.storage import Storage

SOAK = os.environ.get("CPR_SOAK") == "1"
CRASH_BATCHES = 10 if SOAK else 1
CRASH_TRIALS_PER_BATCH = 20
REWRITE_TRIALS = 200 if SOAK else 20

_HOP_HEADERS = ("content-length", "transfer-encoding", "connection", "content-encoding")
_CHUNK = 16 * 1024


# The storage server's side


class StorageProxy:
    """A loopback HTTP server in front of the emulator that sees every object download.

    Requests are forwarded as they are. Object downloads (`alt=media`) are counted
    per object name (`downloads`, and `resumed` for ranged ones), and can be made to
    wait `latency` seconds, trickle at `rate` bytes a second, arrive with their last
    byte flipped (`corrupt`), or run `before_media(name, generation asked for)` first.
    With `faithful`, a download of a generation that is no longer the live one answers
    404, as Cloud Storage does and the emulator does not. `stop()` takes it off the air, cutting
    the bodies under way; `start()` brings it back on the same port.
    """

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.latency = 0.0
        self.rate: float | None = None
        self.corrupt = False
        self.faithful = False
        self.before_media = None
        self.downloads: collections.Counter[str] = collections.Counter()
        self.resumed: collections.Counter[str] = collections.Counter()
        self.sent: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.port = 0
        self._lock = threading.Lock()
        self._server: _ProxyServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = _ProxyServer(("127.0.0.1", self.port), self)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.down.set()
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def reset_counts(self) -> None:
        with self._lock:
            self.downloads.clear()
            self.resumed.clear()
            self.sent.clear()

    def live_generation(self, bucket: str, name: str) -> str | None:
        path = f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
        answer = requests.get(self.upstream + path, timeout=30)
        return answer.json()["generation"] if answer.status_code == 200 else None

    def record(self, counter: collections.Counter, name: str, amount: int = 1) -> None:
        with self._lock:
            counter[name] += amount


class _ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, proxy: StorageProxy):
        self.proxy = proxy
        self.down = threading.Event()
        super().__init__(address, _ProxyHandler)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        # A client killed mid-body (the point of these tests) is not the proxy's error.
        if not isinstance(error, OSError | requests.ConnectionError):
            self.proxy.errors.append(repr(error))


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _ProxyServer

    def _forward(self):
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if query.get("alt") != ["media"]:
            answer = requests.request(
                self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=30
            )
            self._reply(answer.status_code, answer.headers, answer.content)
            return
        bucket, _, name = parts.path.split("/b/", 1)[1].partition("/o/")
        name = unquote(name)
        ranged = any(k.lower() == "range" for k in headers)
        proxy.record(proxy.resumed if ranged else proxy.downloads, name)
        wanted = query.get("generation", [None])[0]
        if proxy.before_media is not None:
            proxy.before_media(name, wanted)
        time.sleep(proxy.latency)
        if proxy.faithful and wanted and proxy.live_generation(bucket, name) != wanted:
            error = {"error": {"code": 404, "message": f"No such object: {bucket}/{name}"}}
            self._reply(404, {"Content-Type": "application/json"}, json.dumps(error).encode())
            return
        answer = requests.get(proxy.upstream + self.path, headers=headers, timeout=30)
        data = answer.content
        if proxy.corrupt and data:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        self._reply(answer.status_code, answer.headers, data, name=name)

    def _reply(self, status: int, headers, data: bytes, name: str | None = None):
        proxy, down = self.server.proxy, self.server.down
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in _HOP_HEADERS:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        for start in range(0, len(data), _CHUNK):
            if down.is_set():
                # Off the air mid-body: the client sees the connection end early.
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            chunk = data[start : start + _CHUNK]
            self.wfile.write(chunk)
            if name is not None:
                proxy.record(proxy.sent, name, len(chunk))
                if proxy.rate:
                    time.sleep(len(chunk) / proxy.rate)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy(emulator):
    proxy = StorageProxy(emulator)
    yield proxy
    proxy.stop()
    assert proxy.errors == [], "the proxy itself failed"


def _client(url: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
    )


# What the function serves


# A predictor that proves it was given whole files: it answers with digests of the
# model directory's weights.bin and of its own package's filler folder.
CHECKED = """
import hashlib
import os

import joblib
import numpy as np


def _digest(folder):
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            digest.update(name.encode() + b"\\0" + f.read() + b"\\0")
    return digest.hexdigest()


class Checked(object):
    @classmethod
    def from_path(cls, model_dir):
        self = cls()
        self.model = joblib.load(os.path.join(model_dir, "model.joblib"))
        with open(os.path.join(model_dir, "weights.bin"), "rb") as f:
            self.weights = hashlib.sha256(f.read()).hexdigest()
        here = os.path.dirname(os.path.abspath(__file__))
        self.package = _digest(os.path.join(here, "filler"))
        return self

    def predict(self, instances, **kwargs):
        classes = self.model.predict(np.asarray(instances)).tolist()
        return [{"class": c, "weights": self.weights, "package": self.package} for c in classes]
"""


def _filler(rng: random.Random, count: int = 1500) -> dict[str, bytes]:
    """Small files that make a package take a while to unpack (about 0.4 s for 1500)."""
    return {f"f{n:04d}.txt": rng.randbytes(512).hex().encode() for n in range(count)}


def _digest(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    return digest.hexdigest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class Staged:
    """A model directory and a `Checked` package in the bucket, and what serving them answers."""

    module: str
    origin: str
    package: str
    files: dict[str, bytes]
    tree: dict[str, bytes]
    archive: bytes

    def expected(self, iris_dir: Path) -> list:
        classes = iris_expected(iris_dir, IRIS, centered=False)
        weights, package = _sha(self.files["weights.bin"]), _digest(self._filler())
        return [{"class": c, "weights": weights, "package": package} for c in classes]

    def _filler(self) -> dict[str, bytes]:
        prefix = f"{self.module}-0.1/filler/"
        return {k[len(prefix) :]: v for k, v in self.tree.items() if k.startswith(prefix)}


def _stage(bucket, tmp_path: Path, module: str, weights: bytes, filler, iris_dir) -> Staged:
    top = f"{module}-0.1"
    tree = {
        f"{top}/setup.py": f"from setuptools import setup\nsetup(name={module!r}, "
        f"version='0.1', scripts=[{module + '.py'!r}])\n".encode(),
        f"{top}/PKG-INFO": f"Metadata-Version: 1.0\nName: {module}\nVersion: 0.1\n".encode(),
        f"{top}/{module}.py": CHECKED.encode(),
        **{f"{top}/filler/{name}": data for name, data in filler.items()},
    }
    archive = make_tar(tmp_path / f"{module}-0.1.tar.gz", tree)
    files = {"model.joblib": (iris_dir / "model.joblib").read_bytes(), "weights.bin": weights}
    for name, data in files.items():
        bucket.blob(f"{module}/model/{name}").upload_from_string(data)
    return Staged(
        module=module,
        origin=f"gs://{bucket.name}/{module}/model",
        package=upload_file(bucket, archive, f"{module}/{module}-0.1.tar.gz"),
        files=files,
        tree=tree,
        archive=archive.read_bytes(),
    )


def _kit_in_gcs(bucket, iris_dir: Path, tmp_path: Path, proxy: StorageProxy) -> dict[str, str]:
    """The test kit's Counting predictor over the iris model, read through the proxy."""
    return {**counting_env(bucket, iris_dir, tmp_path), "STORAGE_EMULATOR_HOST": proxy.url}


def _all_at_once(fn, count: int) -> list[tuple[requests.Response, float]]:
    """`count` prediction requests released together; each answer with its latency."""
    barrier = threading.Barrier(count)

    def one(_):
        barrier.wait()
        started = time.perf_counter()
        answer = fn.predict({"instances": IRIS})
        return answer, time.perf_counter() - started

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


# 1. Concurrency


KIT_OBJECTS = {"iris/model.joblib": 1, "iris/preprocessor.pkl": 1, "kit-0.1.tar.gz": 1}


def test_64_first_requests_to_8_threads_fetch_unpack_and_load_once(
    function, bucket, iris_dir, tmp_path, proxy
):
    proxy.latency = 0.5  # each download takes half a second to start
    env = _kit_in_gcs(bucket, iris_dir, tmp_path, proxy)
    fn = function({**env, "KIT_SLOW": "0.5"}, threads=8)
    expected = iris_expected(iris_dir, IRIS, centered=False)

    answers = _all_at_once(fn, 64)

    correct = sum(a.status_code == 200 and a.json()["predictions"] == expected for a, _ in answers)
    waited = sum(seconds >= 1.0 for _, seconds in answers)
    loads = (tmp_path / "from_path.log").read_text().split()
    cache = fn.version_status()["cache"]
    print(
        f"\n64 first requests, 1 process x 8 threads: correct answers {correct}/64, "
        f"{waited} of them waited >= 1 s on the load; from_path calls: {len(loads)}; "
        f"function counted objects {cache['objects']}, downloaded {cache['downloaded']}, "
        f"unpacked {cache['unpacked']}; downloads seen by storage: {dict(proxy.downloads)}"
    )
    assert correct == 64
    assert waited >= 32, "the requests must really have arrived during the cold start"
    assert len(loads) == 1
    assert cache["objects"] == cache["downloaded"] == 3 and cache["unpacked"] == 1
    assert fn.log().count("downloading gs://") == 3
    assert fn.log().count("unpacking gs://") == 1
    assert proxy.downloads == KIT_OBJECTS


def test_4_workers_starting_together_on_one_cache_fetch_and_unpack_once(
    function, bucket, iris_dir, tmp_path, proxy
):
    proxy.latency = 0.5
    env = _kit_in_gcs(bucket, iris_dir, tmp_path, proxy)
    # CPR_WARMUP: every worker starts loading right after the fork, all four together.
    fn = function({**env, "KIT_SLOW": "0.5", "CPR_WARMUP": "true"}, workers=4, threads=4)
    expected = iris_expected(iris_dir, IRIS, centered=False)

    answers = _all_at_once(fn, 64)

    correct = sum(a.status_code == 200 and a.json()["predictions"] == expected for a, _ in answers)
    pids = (tmp_path / "from_path.log").read_text().split()
    downloads, unpacks = fn.log().count("downloading gs://"), fn.log().count("unpacking gs://")
    print(
        f"\n4 workers on one cache, 64 first requests: correct answers {correct}/64; "
        f"from_path calls {len(pids)} in {len(set(pids))} processes; downloads logged "
        f"{downloads}, unpacks logged {unpacks}; downloads seen by storage: "
        f"{dict(proxy.downloads)}"
    )
    assert correct == 64
    assert len(pids) == len(set(pids)) == 4, "from_path once in each worker"
    assert (downloads, unpacks) == (3, 1)
    assert proxy.downloads == KIT_OBJECTS


# 2. Crash safety

# What a cold start runs (model.py's download and unpack phases), saying when each
# phase begins, so that the test can SIGKILL it in the middle of one.
CRASH_HELPER = """
import sys
from pathlib import Path

from cpr_function.loading import packages
from cpr_function.loading.storage import Storage

cache, origin, package = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
storage = Storage(cache)
listings = [storage.list_directory(origin), storage.list_file(package)]
print("fetching", flush=True)
fetched = [storage.fetch(listing) for listing in listings]
print("unpacking", flush=True)
packages.unpack(fetched[1].path, package, cache, max_bytes=10**9)
print("done", flush=True)
"""


@contextlib.contextmanager
def _helper(cache: Path, staged: Staged, host: str, log: Path):
    env = {**os.environ, "STORAGE_EMULATOR_HOST": host, "NO_GCE_CHECK": "true"}
    with open(log, "w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_HELPER, str(cache), staged.origin, staged.package],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        with proc.stdout:
            try:
                yield proc
            finally:
                proc.kill()
                proc.wait()


def _phase_seconds(cache: Path, staged: Staged, host: str, log: Path) -> dict[str, float]:
    """Runs the helper to its end; how long each phase took."""
    with _helper(cache, staged, host, log) as proc:
        began = {line.strip(): time.perf_counter() for line in proc.stdout}
        assert proc.wait() == 0, log.read_text()
    return {
        "fetching": began["unpacking"] - began["fetching"],
        "unpacking": began["done"] - began["unpacking"],
    }


@dataclasses.dataclass
class Trial:
    staged: Staged
    phase: str
    delay: float
    rewritten: bool
    landed: str = ""
    left: dict[str, int] = dataclasses.field(default_factory=dict)

    def run(self, cache: Path, host: str, log: Path) -> None:
        """Starts the helper, and SIGKILLs it `delay` seconds into `phase`."""
        with _helper(cache, self.staged, host, log) as proc:
            seen = []
            for line in proc.stdout:
                seen.append(line.strip())
                if seen[-1] == self.phase:
                    break
            time.sleep(self.delay)
            proc.send_signal(signal.SIGKILL)
            code = proc.wait()
            # Counted at once: the next cold start in this cache sweeps them away.
            self.left = _partials(cache, writer=proc.pid)
            seen += [line.strip() for line in proc.stdout]
        assert code in (-signal.SIGKILL, 0), log.read_text()
        self.landed = "after the end" if seen[-1] == "done" else f"while {seen[-1]}"


def _partials(cache: Path, writer: int | str = "*") -> dict[str, int]:
    """Partial entries in the cache, by folder: all of them, or those of one writer's pid."""
    return {
        folder: len(list((cache / folder).glob(f".*.partial-{writer}-*")))
        for folder in ("objects", "models", "packages")
    }


def _visible(folder: Path) -> list[Path]:
    """The entries a reader could take: the partial ones are hidden, with a leading dot."""
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


def _files(folder: Path) -> dict[str, bytes]:
    found = (p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in found}


def _not_whole(cache: Path, staged: list[Staged], weights: list[bytes]) -> tuple[int, int]:
    """Every entry a reader could take, checked against the sources: (entries, not whole)."""
    objects = {_sha(d) for s in staged for d in [s.archive, *s.files.values()]}
    objects |= {_sha(w) for w in weights}
    models = [{**s.files, "weights.bin": w} for s in staged for w in weights]
    trees = [s.tree for s in staged]
    entries = bad = 0
    for entry in _visible(cache / "objects"):
        entries, bad = entries + 1, bad + (_sha(entry.read_bytes()) not in objects)
    for entry in _visible(cache / "models"):
        entries, bad = entries + 1, bad + (_files(entry) not in models)
    for entry in _visible(cache / "packages"):
        entries, bad = entries + 1, bad + (_files(entry) not in trees)
    return entries, bad


def _crash_batch(batch: int, rng: random.Random, bucket, proxy, emulator, function, iris_dir, work):
    """Kills a cold start CRASH_TRIALS_PER_BATCH times, then serves every one of them."""
    work.mkdir()
    cache = work / "cache"
    weights, replacement = rng.randbytes(2 * 10**6), rng.randbytes(2 * 10**6)
    filler = _filler(rng)
    staged = [
        _stage(bucket, work, f"crash{batch}_{i}", weights, filler, iris_dir)
        for i in range(CRASH_TRIALS_PER_BATCH)
    ]
    proxy.rate = 4 * 10**6  # a download phase of about 0.7 s to land in
    seconds = _phase_seconds(work / "calibration", staged[0], proxy.url, work / "calibration.log")
    trials = [
        Trial(
            staged=s,
            phase=("fetching", "unpacking")[i % 2],
            delay=rng.uniform(0, seconds[("fetching", "unpacking")[i % 2]]),
            rewritten=i % 4 == 0,
        )
        for i, s in enumerate(staged)
    ]

    def run(numbered):
        i, trial = numbered
        host = proxy.url if trial.phase == "fetching" else emulator
        trial.run(cache, host, work / f"trial{i}.log")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(run, enumerate(trials)))

    left = collections.Counter()
    for trial in trials:
        left.update(trial.left)
    entries, not_whole = _not_whole(cache, staged, [weights])
    # A quarter of the models are rewritten before the restart: a partial download of
    # their old weights is then an orphan that no later fetch asks for again.
    for trial in trials:
        if trial.rewritten:
            bucket.blob(f"{trial.staged.module}/model/weights.bin").upload_from_string(replacement)
            trial.staged.files["weights.bin"] = replacement

    proxy.rate = None
    proxy.reset_counts()
    versions = {
        f"v{i}": {
            "origin": t.staged.origin,
            "package_uris": [t.staged.package],
            "prediction_class": f"{t.staged.module}.Checked",
        }
        for i, t in enumerate(trials)
    }
    (work / "models.json").write_text(
        json.dumps({"models": {"crash": {"versions": versions, "default_version": "v0"}}})
    )
    env = {
        "CPR_MODELS": str(work / "models.json"),
        "CPR_CACHE_DIR": str(cache),
        "CPR_ISOLATION": "none",
        "STORAGE_EMULATOR_HOST": proxy.url,
    }
    fn = function(env, threads=4)

    def serve(numbered):
        i, trial = numbered
        answer = fn.predict(
            {"instances": IRIS}, path=f"/v1/projects/p/models/crash/versions/v{i}:predict"
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"] == trial.staged.expected(iris_dir)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        correct = sum(pool.map(serve, enumerate(trials)))
    status = fn.status()
    fn.stop()
    caches = [version_status(status, "crash", v)["cache"] for v in versions]
    counts = collections.Counter(f"killed {t.landed}" for t in trials)
    counts.update(
        {
            "trials": len(trials),
            "partial downloads left by the kills": left["objects"] + left["models"],
            "partial unpacks left by the kills": left["packages"],
            "orphans": sum(t.left["objects"] for t in trials if t.rewritten),
            "entries a reader could take after the kills": entries,
            "of them not whole": not_whole,
            "correct answers after restart": correct,
            # A partial file taken would show as an entry not whole, or a wrong digest.
            "partial files used": not_whole + len(trials) - correct,
            "objects reused": sum(c["objects"] - c["downloaded"] for c in caches),
            "objects downloaded again": sum(c["downloaded"] for c in caches),
            "downloads seen by storage": sum(proxy.downloads.values()),
            "packages unpacked again": sum(c["unpacked"] for c in caches),
            "partials left after restart": sum(_partials(cache).values()),
            "entries not whole after restart": _not_whole(cache, staged, [weights, replacement])[1],
        }
    )
    bucket.delete_blobs(list(bucket.list_blobs(prefix=f"crash{batch}_")))
    shutil.rmtree(work)
    return counts


@pytest.mark.timeout(1800 if SOAK else 300)
def test_sigkill_during_download_or_unpack_never_leaves_a_partial_entry_in_use(
    bucket, proxy, emulator, function, iris_dir, tmp_path
):
    rng = random.Random(20240607)
    counts = collections.Counter()
    for batch in range(CRASH_BATCHES):
        args = (bucket, proxy, emulator, function, iris_dir, tmp_path / f"batch{batch}")
        counts.update(_crash_batch(batch, rng, *args))
    trials = counts["trials"]
    print(
        f"\ncrash trials: {trials} (SIGKILL {counts['killed while fetching']} times while "
        f"fetching, {counts['killed while unpacking']} while unpacking, "
        f"{counts['killed after the end']} after the end); the kills left "
        f"{counts['partial downloads left by the kills']} partial downloads and "
        f"{counts['partial unpacks left by the kills']} partial unpacks; entries a reader "
        f"could take: {counts['entries a reader could take after the kills']}, not whole: "
        f"{counts['of them not whole']}; partial files used: {counts['partial files used']}; "
        f"correct answers after restart: {counts['correct answers after restart']}; objects "
        f"reused {counts['objects reused']}, downloaded again "
        f"{counts['objects downloaded again']} (storage saw "
        f"{counts['downloads seen by storage']}); packages unpacked again "
        f"{counts['packages unpacked again']} of {trials}; partials left after restart: "
        f"{counts['partials left after restart']} ({counts['orphans']} partial downloads "
        f"were left by kills of models rewritten before the restart)"
    )
    assert counts["of them not whole"] == 0
    assert counts["correct answers after restart"] == trials
    assert counts["partial files used"] == 0
    assert counts["objects downloaded again"] == counts["downloads seen by storage"]
    assert counts["objects reused"] + counts["objects downloaded again"] == 3 * trials
    assert counts["partials left after restart"] == 0
    assert counts["entries not whole after restart"] == 0
    # The kills must have landed mid-phase, or nothing was tested.
    assert counts["partial downloads left by the kills"] > 0
    assert counts["partial unpacks left by the kills"] > 0


@contextlib.contextmanager
def _pending(call, *args):
    """Runs `call(*args)` on a thread while the block injects a fault; yields its future."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool.submit(call, *args)


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the fault was never reached"
        time.sleep(0.01)


def _staged_env(staged: Staged, cache: Path, proxy: StorageProxy) -> dict[str, str]:
    return {
        "CPR_ORIGIN": staged.origin,
        "CPR_PACKAGE_URIS": staged.package,
        "CPR_PREDICTION_CLASS": f"{staged.module}.Checked",
        "CPR_CACHE_DIR": str(cache),
        "STORAGE_EMULATOR_HOST": proxy.url,
    }


def test_storage_going_down_mid_download_resumes_or_answers_503_then_recovers(
    function, bucket, iris_dir, tmp_path, proxy
):
    rng = random.Random(3)
    staged = _stage(bucket, tmp_path, "outage", rng.randbytes(2 * 10**6), _filler(rng), iris_dir)
    weights = "outage/model/weights.bin"
    proxy.rate = 2 * 10**6
    fn = function(_staged_env(staged, tmp_path / "cache", proxy))

    # Down for 2.5 s, within the client's retry window: the same request resumes.
    with _pending(fn.predict, {"instances": IRIS}) as answer:
        _wait_for(lambda: proxy.sent[weights] >= 500_000)
        proxy.stop()
        time.sleep(2.5)
        proxy.start()
    resumed = answer.result()
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["predictions"] == staged.expected(iris_dir)
    ranged = proxy.resumed[weights]

    # Down for longer than the retry window (1 s here): a 503 naming the object, and
    # nothing but whole objects cached; once storage is back, the next fetch completes.
    short = tmp_path / "short"
    store = Storage(short, client=_client(proxy.url), retry_seconds=1)
    listing = store.list_directory(staged.origin)
    proxy.reset_counts()
    with _pending(store.fetch, listing) as fetched:
        _wait_for(lambda: proxy.sent[weights] >= 500_000)
        proxy.stop()
        with pytest.raises(StorageUnavailable) as error:
            fetched.result()
    cached = [p.read_bytes() for p in _visible(short / "objects")]
    left = sum(_partials(short).values())
    proxy.start()
    again = store.fetch(listing)
    print(
        f"\nstorage down 2.5 s mid-download: answer {resumed.status_code} with the right "
        f"digests after {ranged} resumed (ranged) downloads; down past the retry window: "
        f"{error.value.status_code} {error.value}; objects cached {len(cached)}, all whole; "
        f"partial files left: {left}; after it came back: {len(_files(again.path))} whole files"
    )
    assert ranged >= 1
    assert error.value.status_code == 503
    message = f"Cloud Storage could not be reached for gs://{bucket.name}/{weights}"
    assert message in str(error.value)
    assert left == 0
    assert all(c in staged.files.values() for c in cached), "only whole objects are cached"
    assert _files(again.path) == staged.files


def test_the_function_answers_503_while_storage_is_down_and_recovers(
    function, bucket, iris_dir, tmp_path, proxy
):
    # A retry window of 2 s instead of the default 20 s: the 503 comes within it.
    env = _kit_in_gcs(bucket, iris_dir, tmp_path, proxy)
    fn = function({**env, "CPR_STORAGE_RETRY_SECONDS": "2"})
    proxy.stop()
    started = time.perf_counter()
    down = fn.predict({"instances": IRIS})
    waited = time.perf_counter() - started
    proxy.start()
    back = fn.predict({"instances": IRIS})
    print(f"\nstorage down: {down.status_code} after {waited:.1f} s: {down.json()['error']}")
    assert waited < 15, "the window set, not the default 20 s"
    assert down.status_code == 503
    assert "Cloud Storage could not be reached for gs://" in down.json()["error"]
    assert back.status_code == 200
    assert back.json()["predictions"] == iris_expected(iris_dir, IRIS, centered=False)


# 3. Integrity


def test_a_corrupt_download_answers_503_is_never_cached_and_the_next_request_recovers(
    function, bucket, iris_dir, tmp_path, proxy
):
    env = _kit_in_gcs(bucket, iris_dir, tmp_path, proxy)
    proxy.corrupt = True
    fn = function(env)
    refused = fn.predict({"instances": IRIS})
    cached = _visible(tmp_path / "cache" / "objects") + _visible(tmp_path / "cache" / "models")
    proxy.corrupt = False
    answer = fn.predict({"instances": IRIS})
    print(
        f"\ncorrupt downloads: answer {refused.status_code} ({refused.json()['error']}); "
        f"entries cached from them: {len(cached)}; once the bytes are right: "
        f"{answer.status_code}"
    )
    assert refused.status_code == 503
    assert "is corrupt: expected" in refused.json()["error"]
    assert cached == []
    assert answer.status_code == 200
    assert answer.json()["predictions"] == iris_expected(iris_dir, IRIS, centered=False)


def _constant_model() -> bytes:
    import joblib
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier(strategy="constant", constant=2).fit([[0] * 4] * 2, [2, 1])
    with io.BytesIO() as buffer:
        joblib.dump(model, buffer)
        return buffer.getvalue()


@pytest.mark.parametrize("faithful", [False, True], ids=["new-bytes-served", "404-for-old"])
@pytest.mark.parametrize("rewrites", [1, 2], ids=["rewritten-once", "rewritten-again"])
def test_a_model_rewritten_between_listing_and_download_is_never_served_mixed(
    function, bucket, iris_dir, tmp_path, proxy, faithful, rewrites
):
    """Rewritten once during a cold start: it lists the model again and serves the new one.
    Rewritten again during that second try: a 503 naming the object; the next request
    serves the new model. Never a mix of the two."""
    old = {"model.joblib": (iris_dir / "model.joblib").read_bytes(), "stamp.txt": b"old"}
    constant = _constant_model()
    replacements = [
        {"model.joblib": constant, "stamp.txt": b"new"},
        {"model.joblib": constant, "stamp.txt": b"newer"},
    ][:rewrites]
    new = replacements[-1]
    for name, data in old.items():
        bucket.blob(f"m/{name}").upload_from_string(data)
    archive = make_tar(tmp_path / "kit.tar.gz", kit_files())
    done, lock = [], threading.Lock()

    def rewrite(name: str, generation: str | None) -> None:
        # At a download of the live generation (one from a fresh listing), up to
        # `rewrites` times: both files change (new generations, with other bytes).
        with lock:
            live = proxy.live_generation(bucket.name, name)
            if name.startswith("m/") and len(done) < rewrites and generation == live:
                for other, data in replacements[len(done)].items():
                    bucket.blob(f"m/{other}").upload_from_string(data)
                done.append(name)

    # The emulator serves the live bytes whatever generation is asked for; Cloud
    # Storage answers 404 for a generation that is gone. Both must end the same way.
    proxy.faithful = faithful
    proxy.before_media = rewrite
    env = {
        "CPR_ORIGIN": f"gs://{bucket.name}/m",
        "CPR_PACKAGE_URIS": upload_file(bucket, archive, "kit-0.1.tar.gz"),
        "CPR_PREDICTION_CLASS": "kit.Counting",
        "CPR_CACHE_DIR": str(tmp_path / "cache"),
        "STORAGE_EMULATOR_HOST": proxy.url,
    }
    fn = function(env)
    first = fn.predict({"instances": IRIS})
    second = fn.predict({"instances": IRIS})
    served = [_files(d) for d in _visible(tmp_path / "cache" / "models")]
    mixed = sum(d not in (old, new) for d in served)
    how = "404 for the old generation" if faithful else "the new bytes served"
    print(
        f"\nrewritten {len(done)} time(s) after listing ({how}): first answer "
        f"{first.status_code} ({first.json().get('error')}); next answer "
        f"{second.status_code} {second.json().get('predictions')}; model folders cached: "
        f"{len(served)}, mixed: {mixed}"
    )
    assert len(done) == rewrites
    if rewrites == 1:
        assert first.status_code == 200
        assert first.json()["predictions"] == [2, 2, 2], "the new model, whole, at once"
        assert "listing model default version v1 again" in fn.log()
    else:
        assert first.status_code == 503
        assert f"gs://{bucket.name}/m/" in first.json()["error"]
        assert "changed after it was listed: expected generation" in first.json()["error"]
    assert second.status_code == 200
    assert second.json()["predictions"] == [2, 2, 2], "the new model, whole"
    assert served == [new]


def test_rewrites_at_random_moments_give_all_old_or_a_503_never_a_mix(bucket, proxy, tmp_path):
    rng = random.Random(11)
    # One download at a time, each reaching storage 0.05 s after it was asked for: a
    # rewrite 0 to 0.25 s after the listing lands before both reads, between them (the
    # moment a mix could be made), or after both.
    store = Storage(tmp_path / "cache", client=_client(proxy.url), parallelism=1)
    proxy.latency = 0.05
    outcomes: collections.Counter[str] = collections.Counter()
    versions = []
    for trial in range(REWRITE_TRIALS):
        proxy.faithful = trial % 2 == 1
        old = {"a.bin": rng.randbytes(20_000), "b.bin": rng.randbytes(20_000)}
        new = {"a.bin": rng.randbytes(20_000), "b.bin": rng.randbytes(20_000)}
        versions += [old, new]
        uri = f"gs://{bucket.name}/r{trial}"
        for name, data in old.items():
            bucket.blob(f"r{trial}/{name}").upload_from_string(data)
        listing = store.list_directory(uri)

        def rewrite(trial=trial, new=new):
            for name, data in new.items():
                bucket.blob(f"r{trial}/{name}").upload_from_string(data)

        timer = threading.Timer(rng.uniform(0, 0.25), rewrite)
        timer.start()
        try:
            got = _files(store.fetch(listing).path)
            outcomes["all old" if got == old else "all new" if got == new else "mixed"] += 1
        except ObjectChanged as exc:
            assert exc.status_code == 503
            outcomes["refused with 503"] += 1
            # Refused at b.bin: a.bin had come whole and old, the moment a mix could be made.
            outcomes["of them at the second file"] += f"r{trial}/b.bin changed" in str(exc)
        timer.join()
        again = _files(store.fetch(store.list_directory(uri)).path)
        outcomes["all new after listing again"] += again == new
    folders = [_files(d) for d in _visible(tmp_path / "cache" / "models")]
    mixed = sum(f not in versions for f in folders)
    print(
        f"\nrewrite trials: {REWRITE_TRIALS} (half with 404 for a gone generation): "
        f"{dict(outcomes)}; model folders cached: {len(folders)}, mixed: {mixed}"
    )
    assert outcomes["mixed"] == 0 and mixed == 0
    assert outcomes["all new after listing again"] == REWRITE_TRIALS
    assert outcomes["all old"] + outcomes["refused with 503"] == REWRITE_TRIALS
    assert outcomes["all old"] > 0 and outcomes["of them at the second file"] > 0
