"""batch-predict vs a plain Python loop and vs the online path, side by side in one run.

Usage: python bench/batch.py [--instances 200000] [--batch-size 64] [--rounds 1]
                             [--model example|forest|both] [--venv DIR]

For each model, over the same file of instances (JSON lines), each round times:

- `floor`: one Python process that loads the model, reads the file, calls predict on
  batches of --batch-size and writes one JSON line per instance: no framework at all;
- `beam-1`, `beam-2`: `python -m cpr_function batch-predict` on Beam's local runner with
  1 and 2 worker processes (the default on 2 cores);
- `online`: `python -m cpr_function predict` sending the file in batches of --batch-size
  to a warm local function (its start is not counted). The function merges concurrent
  requests into predict calls of up to 1024 instances (micro-batching's default);
- `beam-2-big`: `beam-2` with `--batch-size` 1024, predict calls as large as the
  function's merged ones: what `batch-predict` does with no `--batch-size` for a
  predictor that declares itself batchable, such as the forest's adapter (the example's
  routine gets 64 a call, `beam-2`). The issue's 3x is printed against the job at its
  defaults.

At 200,000 instances each job's start (Python, Beam, the model) is a large share; the
issue's jobs are of millions: `--instances 2000000` takes about 8 minutes a round.

Each figure is the wall time of a whole command, start to exit, so Beam's start, the
model's load in each worker and writing the output are all counted. `example` is the
bundled routine (its predictor, run in the floor from its own modules); `forest` a
100-tree scikit-learn forest served with no custom code (sklearn's predict in the floor).
Beam's own cost per element is (beam-1 - floor) divided by the chunks it handled.

Every side runs on this interpreter, unless `--venv DIR` names a virtualenv holding what
`pip install 'cpr-function[batch]'` installs (`requirements.txt` and
`requirements-batch.txt`; made there first if DIR holds none). That is what a user runs the
job with. This development environment holds more, and more costs each start: pandas,
which scikit-learn imports whenever it is installed, adds about 0.2 s to every process
that imports scikit-learn (the floor's, the job's and each of its workers').
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, Function, venv  # noqa: E402
from microbatch import train_forest  # noqa: E402

EXAMPLES = REPO / "examples"
BIG_BATCH = 1024  # the most instances micro-batching merges into one call, by default
EXAMPLE_FLAGS = [
    *("--model-dir", str(EXAMPLES / "model")),
    *("--package-uris", str(EXAMPLES / "dist" / "my_custom_code-0.1.tar.gz")),
    *("--prediction-class", "predictor.MyPredictor"),
]

# The floor: the least a script must do for the same output.
FLOOR = r"""
import json, pickle, sys
import joblib
import numpy as np

kind, model_dir, source, target, size = sys.argv[1:6]
size = int(size)
if kind == "example":
    sys.path.insert(0, sys.argv[6])  # the routine's own preprocess module, for its pickle
    model = joblib.load(f"{model_dir}/model.joblib")
    with open(f"{model_dir}/preprocessor.pkl", "rb") as f:
        preprocessor = pickle.load(f)
    predict = lambda rows: model.predict(preprocessor.preprocess(np.asarray(rows))).tolist()
else:
    model = joblib.load(f"{model_dir}/model.joblib")
    predict = lambda rows: model.predict(np.asarray(rows)).tolist()
with open(source, "rb") as lines, open(target, "w") as out:
    batch = []
    def flush():
        for row, p in zip(batch, predict([json.loads(r) for r in batch])):
            out.write('{"instance":' + row.decode() + ',"prediction":' + json.dumps(p) + "}\n")
        batch.clear()
    for line in lines:
        batch.append(line.strip())
        if len(batch) == size:
            flush()
    if batch:
        flush()
"""


def instances(count: int, path: Path) -> None:
    random.seed(0)
    with path.open("w") as out:
        for _ in range(count):
            row = [round(random.uniform(0.1, 7.9), 2) for _ in range(4)]
            out.write(json.dumps(row) + "\n")


def env() -> dict[str, str]:
    closed = "127.0.0.1:9"  # loopback only: Google's metadata server is never probed
    base = {k: v for k, v in os.environ.items() if not k.startswith("CPR_")}
    return {**base, "NO_GCE_CHECK": "True", "GCE_METADATA_HOST": closed, "GCE_METADATA_IP": closed}


def timed(command: list[str], **kwargs) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env(), **kwargs)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:5])} ... failed:\n{done.stderr[-3000:]}")
    return seconds


def environment(folder: Path | None) -> str:
    """The interpreter every side runs on: this one, or that of the virtualenv in `folder`,
    made there first (from the requirements files, as the [batch] extra installs them)."""
    if folder is None:
        return sys.executable
    needs = ["-r", str(REPO / "requirements.txt"), "-r", str(REPO / "requirements-batch.txt")]
    return str(venv(folder, needs))


def run_model(kind: str, work: Path, args) -> dict[str, list[float]]:
    source = work / f"{kind}.jsonl"
    instances(args.instances, source)
    if kind == "example":
        flags, model_dir = EXAMPLE_FLAGS, EXAMPLES / "model"
        fn_env = {}
    else:
        model_dir = work / "forest"
        train_forest(model_dir)
        flags = ["--model-dir", str(model_dir), "--framework", "scikit-learn"]
        fn_env = {"CPR_ORIGIN": str(model_dir), "CPR_FRAMEWORK": "scikit-learn"}
    cache = work / "cache"
    common = ["--input-paths", str(source), "--cache-dir", str(cache)]
    python = args.python
    fn = Function({**fn_env, "CPR_CACHE_DIR": str(cache)}, python=python)
    times: dict[str, list[float]] = {
        "floor": [],
        "beam-1": [],
        "beam-2": [],
        "online": [],
        "beam-2-big": [],
    }
    try:
        fn.call("/predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]})  # warm
        for round_ in range(args.rounds):
            out = work / f"out-{kind}-{round_}"
            floor = [python, "-c", FLOOR, kind, str(model_dir), str(source)]
            floor += [
                str(work / "floor.jsonl"),
                str(args.batch_size),
                str(EXAMPLES / "custom_code"),
            ]
            times["floor"].append(timed(floor))
            for name, workers, size in (
                ("beam-1", 1, args.batch_size),
                ("beam-2", 2, args.batch_size),
                ("beam-2-big", 2, BIG_BATCH),
            ):
                command = [python, "-m", "cpr_function", "batch-predict", *flags, *common]
                command += ["--output-path", f"{out}-{name}", "--batch-size", str(size)]
                command += ["--direct_num_workers", str(workers)]
                times[name].append(timed(command, cwd=REPO))
                summary = json.loads(Path(f"{out}-{name}/prediction.summary.json").read_text())
                assert summary["predicted"] == args.instances, summary
            online = [python, "-m", "cpr_function", "predict", "--url"]
            online += [f"http://127.0.0.1:{fn.port}/predict", "--json-instances", str(source)]
            online += ["--batch-size", str(args.batch_size), "--no-progress"]
            online += ["--output", str(work / "online.jsonl")]
            times["online"].append(timed(online, cwd=REPO))
            shown = ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items())
            print(f"{kind} round {round_ + 1}: {shown}", flush=True)
    finally:
        fn.stop()
    return times


def report(kind: str, times: dict[str, list[float]], args) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: args.instances / s for k, s in med.items()}
    print(
        f"\n{kind}: {args.instances} instances, batches of {args.batch_size}, "
        f"{args.rounds} round(s); medians"
    )
    for name in times:
        spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}s"
        print(f"  {name:<10} {med[name]:7.2f}s  {rate[name]:9.0f} instances/s  ({spread})")
    print(
        f"  beam-1 / floor  {rate['beam-1'] / rate['floor']:.2f}x  (target >= 0.8x on the forest)"
    )
    print(
        f"  beam-2 / beam-1 {rate['beam-2'] / rate['beam-1']:.2f}x  (target >= 1.6x on the forest)"
    )
    print(f"  beam-2 / online {rate['beam-2'] / rate['online']:.2f}x")
    print(f"  beam-1 / online {rate['beam-1'] / rate['online']:.2f}x")
    # What a user gets with no --batch-size: 1024 a call for the forest's batchable
    # adapter, 64 for the example's routine (handler.call_size).
    default = "beam-2-big" if kind == "forest" else "beam-2"
    print(
        f"  the job at its defaults ({default}) / online "
        f"{rate[default] / rate['online']:.2f}x  (target >= 3x)"
    )
    print(
        f"  beam-2-big / online {rate['beam-2-big'] / rate['online']:.2f}x  (predict calls of "
        f"up to {BIG_BATCH} in both)"
    )
    chunks = -(-args.instances // args.batch_size)
    extra = (med["beam-1"] - med["floor"]) / chunks * 1e6
    print(
        f"  Beam and the function's layers over the floor: {extra:.0f} us a chunk of "
        f"{args.batch_size}, {extra / args.batch_size:.1f} us an instance (start included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--model", choices=("example", "forest", "both"), default="both")
    parser.add_argument(
        "--venv", type=Path, help="run every side from this virtualenv (made if missing)"
    )
    args = parser.parse_args()
    args.python = environment(args.venv)
    print(f"every side on {args.python}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="cpr-bench-batch-"))
    try:
        kinds = ("example", "forest") if args.model == "both" else (args.model,)
        results = {kind: run_model(kind, work, args) for kind in kinds}
        for kind, times in results.items():
            report(kind, times, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
