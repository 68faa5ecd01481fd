"""Forward mode and the batching client vs the blog's sequential InferAPI loop, side by side.

Usage: python bench/forwarding.py [--instances 10000] [--rounds 3] [--delay 0.02]

The upstream is our function serving the bundled example through a predictor that
first sleeps `--delay` seconds per call, as a remote model's network and queueing would.
The sequential loop sends batches of 100 one after the other with googleapiclient's
`ml` v1 client, as the seed blog's InferAPI did; forward mode gets all instances in one
request to a forwarding function with default settings; the client is
`cpr_function.remote.client.predict` with default settings.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from harness import REPO, Function  # noqa: E402

SLOW = '''
import time

from predictor import MyPredictor


class Slow(MyPredictor):
    """The example's predictor, answering {delay}s later, as a remote model would."""

    def predict(self, instances, **kwargs):
        time.sleep({delay})
        return super().predict(instances, **kwargs)
'''
MODEL = "projects/bench/models/default"


def slow_package(folder: Path, delay: float) -> Path:
    path = folder / "slow-0.1.tar.gz"
    data = SLOW.format(delay=delay).encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("slow-0.1/slow.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def sequential(url: str, instances: list, batch_size: int = 100) -> list:
    """The InferAPI pattern: one googleapiclient call per batch, one after the other."""
    from google.auth.credentials import AnonymousCredentials
    from googleapiclient import discovery

    ml = discovery.build(
        "ml",
        "v1",
        client_options={"api_endpoint": url},
        credentials=AnonymousCredentials(),
        cache_discovery=False,
    )
    predictions = []
    try:
        for start in range(0, len(instances), batch_size):
            body = {"instances": instances[start : start + batch_size]}
            predictions += ml.projects().predict(name=MODEL, body=body).execute()["predictions"]
    finally:
        ml.close()
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    from cpr_function.remote import client

    folder = Path(tempfile.mkdtemp(prefix="cpr-bench-"))
    example = REPO / "examples"
    upstream = Function(
        {
            "CPR_ORIGIN": str(example / "model"),
            "CPR_PACKAGE_URIS": f"{example / 'dist' / 'my_custom_code-0.1.tar.gz'},"
            f"{slow_package(folder, args.delay)}",
            "CPR_PREDICTION_CLASS": "slow.Slow",
            "CPR_CACHE_DIR": str(folder / "cache"),
        },
        threads=16,
    )
    url = f"http://127.0.0.1:{upstream.port}"
    forwarder = Function({"CPR_FORWARD_TO": MODEL, "CPR_API_ENDPOINT": url})
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    instances = [rows[i % 3] for i in range(args.instances)]
    runs = {
        "sequential": lambda: sequential(url, instances),
        "forward": lambda: forwarder.call("/", {"instances": instances})["predictions"],
        "client": lambda: client.predict(instances, model=MODEL, api_endpoint=url),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    try:
        expected = sequential(url, instances[:300])  # warms the upstream's model
        for _ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                predictions = run()
                times[name].append(time.perf_counter() - start)
                assert predictions[:300] == expected and len(predictions) == len(instances)
    finally:
        upstream.stop()
        forwarder.stop()
        shutil.rmtree(folder, ignore_errors=True)
    base = statistics.median(times["sequential"])
    print(
        f"{args.instances} instances, batches of 100, upstream +{args.delay * 1000:.0f} ms per "
        f"call, median of {args.rounds} rounds"
    )
    for name in runs:
        median = statistics.median(times[name])
        print(f"{name:>10}: {median:6.2f}s  speed-up over sequential {base / median:5.2f}x")


if __name__ == "__main__":
    main()
