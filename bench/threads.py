"""The same function with different gunicorn worker and thread counts, side by side.

Usage: python bench/threads.py [--seconds 3] [--rounds 3] [--connections 1,8,32]
                               [--model example|forest] [--instances 1]
                               [--shapes 1x8,1x2,2x4] [--generator wrk|python]
                               [--microbatch true|false|all]

Each shape WxT is a function with WORKERS=W gunicorn processes of THREADS=T threads, the
host settings functions-framework reads; `1x8` is the harness's usual one. `example` is a
LogisticRegression on iris, `forest` a 100-tree random forest, both served with no custom
code, with `--microbatch` as CPR_MICROBATCH (unset: the function's default). Shapes of more
than one worker warm each worker before the first request (CPR_WARMUP's default). Rounds
alternate between the shapes; the table gives each shape's throughput over the first
shape's, and p50/p99, per connection count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import GENERATORS, Function  # noqa: E402
from microbatch import train_forest  # noqa: E402

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def model_dir(kind: str, root: Path) -> Path:
    if kind == "forest":
        train_forest(root / "forest")
        return root / "forest"
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    (root / "example").mkdir()
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    joblib.dump(model, root / "example" / "model.joblib")
    return root / "example"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--model", choices=("example", "forest"), default="example")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--shapes", default="1x8,1x2,2x4")
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="wrk")
    parser.add_argument(
        "--microbatch", choices=("true", "false", "all"), help="CPR_MICROBATCH (default: unset)"
    )
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    generate = GENERATORS[args.generator]
    body = {"instances": (ROWS * args.instances)[: args.instances]}
    with tempfile.TemporaryDirectory(prefix="cpr-bench-threads-") as tmp:
        root = Path(tmp)
        env = {"CPR_ORIGIN": str(model_dir(args.model, root)), "CPR_FRAMEWORK": "scikit-learn"}
        env["CPR_CACHE_DIR"] = str(root / "cache")
        if args.microbatch:
            env["CPR_MICROBATCH"] = args.microbatch
        functions = {}
        try:
            for workers, threads in shapes:
                fn = Function({**env, "WORKERS": str(workers)}, threads=threads)
                fn.call("/predict", body)
                functions[(workers, threads)] = fn
            results: dict = {}
            for round_ in range(args.rounds):
                order = shapes[round_ % len(shapes) :] + shapes[: round_ % len(shapes)]
                for c in connections:
                    for shape in order:
                        run = generate(
                            functions[shape].port,
                            "/predict",
                            body,
                            connections=c,
                            seconds=args.seconds,
                        )
                        results.setdefault((shape, c), []).append(run)
        finally:
            for fn in functions.values():
                fn.stop()
    first = shapes[0]
    print(
        f"{args.model}, {args.instances} instance(s) a request, CPR_MICROBATCH="
        f"{args.microbatch or 'unset'}, {args.rounds} round(s) of "
        f"{args.seconds:g} s, load from {args.generator}; throughput over {first[0]}x{first[1]}"
    )
    print(f"{'conns':>5} " + " ".join(f"{f'{w}x{t}':>26}" for w, t in shapes))
    for c in connections:
        cells = []
        for shape in shapes:
            runs, base = results[(shape, c)], results[(first, c)]
            ratio = statistics.median(
                r.throughput / b.throughput for r, b in zip(runs, base, strict=True)
            )
            rps = statistics.median(r.throughput for r in runs)
            p99 = statistics.median(r.p99 for r in runs) * 1000
            cells.append(f"{ratio:5.2f}x {rps:7.0f}/s p99 {p99:6.1f}ms")
        print(f"{c:>5} " + " ".join(f"{cell:>26}" for cell in cells))


if __name__ == "__main__":
    main()
