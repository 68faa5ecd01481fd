"""Micro-batching off vs on, side by side in one run: throughput and p50 per connection count.

Usage: python bench/microbatch.py [--seconds 3] [--rounds 3] [--connections 1,2,8,32]
                                  [--model example|forest|both] [--isolation none|process]
                                  [--wait-ms W] [--max-size N] [--ceiling]
                                  [--generator python|wrk]

`example` is the bundled example served with no CPR_* variable (its MyPredictor
declares nothing, so batching is turned on for it with CPR_MICROBATCH=all);
`forest` is a 100-tree scikit-learn random forest trained here on iris and served
by the built-in adapter, which declares itself batchable (CPR_MICROBATCH=true).
Every request carries one instance. Both functions run one gunicorn worker with
32 threads, so that 32 connections are 32 requests in flight; rounds alternate
between them so that machine noise falls on both alike. `--isolation process` serves
the version in a process of its own in both, where requests merge before its channel.
`--ceiling` also loads a function that reads the body and answers a constant, with the
same host and threads: no model, no routing, no logs; its throughput over `off`'s bounds
what any change to the request path could gain. `--generator wrk` makes the load with
wrk, a C program, instead of a Python thread per connection, which on 2 cores takes CPU
from the server it measures.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import GENERATORS, Function  # noqa: E402

ROW = [5.1, 3.5, 1.4, 0.2]
EMPTY = """
def predict(request):
    request.get_data()
    return '{"predictions": [0]}', 200, {"Content-Type": "application/json"}
"""


def train_forest(model_dir: Path) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    features, labels = load_iris(return_X_y=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(features, labels)
    joblib.dump(forest, model_dir / "model.joblib")


def settings(model: str, workdir: Path, args) -> dict[str, dict[str, str]]:
    """The environment of the `off` and `on` functions."""
    if model == "example":
        base, mode = {}, "all"
    else:
        train_forest(workdir / "forest")
        base = {"CPR_ORIGIN": str(workdir / "forest"), "CPR_FRAMEWORK": "scikit-learn"}
        mode = "true"
    if args.isolation == "process":
        base["CPR_ISOLATION"] = "process"
    on = {**base, "CPR_MICROBATCH": mode}
    if args.wait_ms is not None:
        on["CPR_MICROBATCH_WAIT_MS"] = str(args.wait_ms)
    if args.max_size is not None:
        on["CPR_MICROBATCH_MAX_SIZE"] = str(args.max_size)
    return {"off": {**base, "CPR_MICROBATCH": "false"}, "on": on}


def batcher(fn: Function) -> dict:
    """The `microbatch` status of the function's version: its settings and counts so far."""
    return fn.call("/")["models"][0]["versions"][0].get("microbatch") or {}


def merged(fn: Function) -> tuple[int, int]:
    """Calls and requests the function's batcher has counted so far."""
    status = batcher(fn)
    return status.get("calls", 0), status.get("requests", 0)


def run(model: str, args) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cpr-bench-"))
    envs = settings(model, workdir, args)
    functions = {mode: Function(env, threads=32) for mode, env in envs.items()}
    if args.ceiling:
        (workdir / "empty.py").write_text(EMPTY)
        functions["empty"] = Function({}, source=workdir / "empty.py", threads=32)
    results: dict[tuple[str, int], list] = {}
    per_call: dict[int, list[float]] = {}
    try:
        for fn in functions.values():
            fn.call("/", {"instances": [ROW]})
        for _ in range(args.rounds):
            for connections in args.connections:
                for mode, fn in functions.items():
                    before = merged(fn) if mode == "on" else (0, 0)
                    results.setdefault((mode, connections), []).append(
                        GENERATORS[args.generator](
                            fn.port,
                            "/",
                            {"instances": [ROW]},
                            connections=connections,
                            seconds=args.seconds,
                        )
                    )
                    if mode == "on":
                        calls, requests = (b - a for a, b in zip(before, merged(fn), strict=True))
                        per_call.setdefault(connections, []).append(requests / max(calls, 1))
        knobs = batcher(functions["on"])
    finally:
        for fn in functions.values():
            fn.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    on = envs["on"]
    print(
        f"micro-batching off vs on ({model}, CPR_ISOLATION={args.isolation}: "
        f"CPR_MICROBATCH={on['CPR_MICROBATCH']}, "
        f"wait {knobs['waitMs']:g} ms, max size {knobs['maxSize']}), 1 instance per request, "
        f"median of {args.rounds} rounds, load from {args.generator}"
    )
    print(
        f"{'conns':>5} {'throughput ratio':>17} {'off req/s':>10} {'on req/s':>9} "
        f"{'off p50':>8} {'on p50':>7} {'p50 added':>10} {'requests/call':>14}"
        + (f" {'empty/off':>10}" if args.ceiling else "")
    )
    for connections in args.connections:
        off, on_runs = results[("off", connections)], results[("on", connections)]
        pairs = list(zip(on_runs, off, strict=True))
        ratio = _ratio(on_runs, off)
        added = statistics.median((b.p50 - a.p50) * 1000 for b, a in pairs)
        print(
            f"{connections:>5} {ratio:>16.2f}x "
            f"{statistics.median(r.throughput for r in off):>10.0f} "
            f"{statistics.median(r.throughput for r in on_runs):>9.0f} "
            f"{statistics.median(r.p50 for r in off) * 1000:>8.2f} "
            f"{statistics.median(r.p50 for r in on_runs) * 1000:>7.2f} "
            f"{added:>+10.3f} "
            f"{statistics.median(per_call.get(connections, [1.0])):>14.1f}"
            + (f" {_ratio(results[('empty', connections)], off):>9.2f}x" if args.ceiling else "")
        )
    print("(p50 in ms)")


def _ratio(runs: list, base: list) -> float:
    return statistics.median(r.throughput / b.throughput for r, b in zip(runs, base, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--connections", type=lambda s: [int(c) for c in s.split(",")], default=[1, 2, 8, 32]
    )
    parser.add_argument("--model", choices=("example", "forest", "both"), default="both")
    parser.add_argument("--isolation", choices=("none", "process"), default="none")
    parser.add_argument("--wait-ms", type=float, default=None)
    parser.add_argument("--max-size", type=int, default=None)
    parser.add_argument("--ceiling", action="store_true")
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="python")
    args = parser.parse_args()
    for model in ("example", "forest") if args.model == "both" else (args.model,):
        run(model, args)


if __name__ == "__main__":
    main()
