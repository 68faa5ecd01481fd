"""Effective memory of a function serving a 100 MB model, CPR_DELETE_AFTER_LOAD off and on.

Usage: python bench/memory.py [--megabytes 100] [--rounds 3]

On Cloud Functions /tmp is an in-memory filesystem: the files cached there count
against the instance's memory as the process's own pages do. So the effective
memory is the function's resident memory (gunicorn master and worker) plus the
bytes its cache directory holds, measured here on /dev/shm (a file hard-linked
twice counted once).

The model directory, in a gcp-storage-emulator server, holds `weights.npy`, a
float32 array of --megabytes, and a small `config.json`; the package, an sdist
made here, has a predictor whose `from_path` reads the array whole with `np.load`.
Each round starts one function with the option off and one with it on, one after
the other in alternating order, each on an empty cache: the first request loads
the model while a thread samples resident memory and cache bytes every 20 ms; a
second request follows; then both are measured at rest. Then each is restarted on
its cache and its first request timed: with the option on, it downloads again.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Function, dir_bytes, emulator, tree_rss  # noqa: E402

PREDICTOR = '''
import os

import numpy as np


class Weights(object):
    """Reads the whole weights array in from_path; answers each instance i with weight i."""

    @classmethod
    def from_path(cls, model_dir):
        self = cls()
        self.weights = np.load(os.path.join(model_dir, "weights.npy"))
        return self

    def predict(self, instances, **kwargs):
        return [float(self.weights[int(i) % len(self.weights)]) for i in instances]
'''

INSTANCES = [0, 1, 12345, 999999]


def sdist() -> bytes:
    files = {
        "weights-0.1/setup.py": "from setuptools import setup\n"
        "setup(name='weights', version='0.1', scripts=['weights.py'])\n",
        "weights-0.1/weights.py": PREDICTOR,
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def upload(client, megabytes: float) -> tuple[dict[str, str], list[float]]:
    import numpy as np

    bucket = client.create_bucket("bench-memory")
    weights = np.random.default_rng(0).random(int(megabytes * 10**6 / 4), dtype=np.float32)
    data = io.BytesIO()
    np.save(data, weights)
    bucket.blob("model/weights.npy").upload_from_string(data.getvalue())
    bucket.blob("model/config.json").upload_from_string(json.dumps({"dtype": "float32"}))
    bucket.blob("staging/weights-0.1.tar.gz").upload_from_string(sdist())
    env = {
        "CPR_ORIGIN": f"gs://{bucket.name}/model",
        "CPR_PACKAGE_URIS": f"gs://{bucket.name}/staging/weights-0.1.tar.gz",
        "CPR_PREDICTION_CLASS": "weights.Weights",
        "CPR_MAX_MODEL_BYTES": "2GB",
    }
    expected = [float(weights[i % len(weights)]) for i in INSTANCES]
    return env, expected


class Sampler:
    """The most bytes a cache directory held, sampled every 20 ms until stopped."""

    def __init__(self, cache: Path):
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cache,))
        self._thread.start()

    def _run(self, cache: Path) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, dir_bytes(cache))
            self._stop.wait(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.most


def run_once(env: dict[str, str], cache: Path, expected: list[float]) -> dict[str, float]:
    fn = Function({**env, "CPR_CACHE_DIR": str(cache)})
    try:
        sampler = Sampler(cache)
        start = time.perf_counter()
        first = fn.call("/", {"instances": INSTANCES})
        cold = time.perf_counter() - start
        most_cached = sampler.stop()
        assert first == {"predictions": expected}, first
        assert fn.call("/", {"instances": INSTANCES}) == first
        time.sleep(0.5)
        rss, held = tree_rss(fn.proc.pid), dir_bytes(cache)
        # The files are read while the array fills: the peak is both at once.
        peak = tree_rss(fn.proc.pid, "VmHWM") + most_cached
        files = sum(1 for p in cache.rglob("[!.]*") if p.is_file() and ".locks" not in p.parts)
    finally:
        fn.stop()
    again = Function({**env, "CPR_CACHE_DIR": str(cache)})
    try:
        start = time.perf_counter()
        assert again.call("/", {"instances": INSTANCES}) == first
        restart = time.perf_counter() - start
        status = again.call("/")
        version = status["models"][0]["versions"][0]
        downloaded = version["cache"]["downloadedBytes"]
    finally:
        again.stop()
    return {
        "rss": rss,
        "cache": held,
        "effective": rss + held,
        "peak": peak,
        "files": files,
        "cold": cold,
        "restart": restart,
        "redownloaded": downloaded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    memory = "/dev/shm" if Path("/dev/shm").is_dir() else None
    modes = {"off": "false", "on": "true"}
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    with emulator() as _client, tempfile.TemporaryDirectory(dir=memory) as tmp:
        env, expected = upload(_client, args.megabytes)
        for r in range(args.rounds):
            for mode in list(modes)[r % 2 :] + list(modes)[: r % 2]:
                cache = Path(tmp) / f"{mode}-{r}"
                flag = {"CPR_DELETE_AFTER_LOAD": modes[mode]}
                results[mode].append(run_once({**env, **flag}, cache, expected))

    def median(mode: str, key: str) -> float:
        return statistics.median(x[key] for x in results[mode])

    def ratio(key: str) -> float:
        pairs = zip(results["on"], results["off"], strict=True)
        return statistics.median(on[key] / off[key] for on, off in pairs)

    print(
        f"a {args.megabytes:g} MB model read whole by from_path; CPR_DELETE_AFTER_LOAD off vs on, "
        f"{args.rounds} rounds alternating, medians; cache on /dev/shm"
    )
    print(f"{'':>44} {'off':>8} {'on':>8} {'on/off':>7}")
    rows = [
        ("resident memory at rest (MB)", "rss", 1e6),
        ("cache at rest (MB)", "cache", 1e6),
        ("effective memory at rest: RSS + cache (MB)", "effective", 1e6),
        ("peak while loading: peak RSS + cache (MB)", "peak", 1e6),
        ("first request, empty cache (s)", "cold", 1),
        ("first request after a restart (s)", "restart", 1),
    ]
    for label, key, unit in rows:
        off, on = median("off", key) / unit, median("on", key) / unit
        print(f"{label:>44} {off:>8.2f} {on:>8.2f} {ratio(key):>6.2f}x")
    label = "downloaded after a restart (MB)"
    off, on = (median(mode, "redownloaded") / 1e6 for mode in modes)
    print(f"{label:>44} {off:>8.2f} {on:>8.2f}")
    for mode in modes:
        files, held = median(mode, "files"), median(mode, "cache")
        print(f"the cache at rest, {mode}: {files:.0f} files, {held:,.0f} bytes")


if __name__ == "__main__":
    main()
