"""What a process per version costs against serving in-process, side by side in one run.

Usage: python bench/isolation.py [--seconds 3] [--rounds 3]

Both functions serve the bundled example (the scikit-learn custom prediction
routine); one with CPR_ISOLATION=none, one with CPR_ISOLATION=process. Rounds
alternate between them so that machine noise falls on both alike.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Function, load, tree_rss  # noqa: E402

ROW = [5.1, 3.5, 1.4, 0.2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="cpr-bench-")
    modes = {"in-process": "none", "process": "process"}
    env = {m: {"CPR_ISOLATION": i, "CPR_CACHE_DIR": cache} for m, i in modes.items()}
    functions = {mode: Function(env[mode]) for mode in modes}
    try:
        cold = {}
        for fn in functions.values():  # fill the cache, so both first requests find it warm
            fn.call("/", {"instances": [ROW]})
        for mode, fn in functions.items():
            fn.stop()
            functions[mode] = fn = Function(env[mode])
            start = time.perf_counter()
            fn.call("/", {"instances": [ROW]})
            cold[mode] = time.perf_counter() - start
        results: dict[tuple[str, int, int], list] = {}
        for _ in range(args.rounds):
            for instances in (1, 100):
                for connections in (1, 8):
                    for mode, fn in functions.items():
                        run = load(
                            fn.port,
                            "/",
                            {"instances": [ROW] * instances},
                            connections=connections,
                            seconds=args.seconds,
                        )
                        results.setdefault((mode, instances, connections), []).append(run)
        memory = {mode: tree_rss(fn.proc.pid) for mode, fn in functions.items()}
    finally:
        for fn in functions.values():
            fn.stop()
        shutil.rmtree(cache, ignore_errors=True)

    print("process per version vs in-process, the bundled example, one run side by side")
    print(f"{'instances':>9} {'conns':>5} {'throughput ratio':>17} {'p50 added (ms)':>15}")
    for instances in (1, 100):
        for connections in (1, 8):
            inproc = results[("in-process", instances, connections)]
            proc = results[("process", instances, connections)]
            ratio = statistics.median(
                p.throughput / i.throughput for p, i in zip(proc, inproc, strict=True)
            )
            added = statistics.median(
                (p.p50 - i.p50) * 1000 for p, i in zip(proc, inproc, strict=True)
            )
            print(f"{instances:>9} {connections:>5} {ratio:>16.2f}x {added:>15.3f}")
    ratio = cold["process"] / cold["in-process"]
    print(
        f"first request on a warm cache: {ratio:.2f}x "
        f"({cold['process']:.2f}s vs {cold['in-process']:.2f}s)"
    )
    print(
        f"resident memory, function plus workers: {memory['process'] / memory['in-process']:.2f}x "
        f"({memory['process'] / 1e6:.0f} MB vs {memory['in-process'] / 1e6:.0f} MB)"
    )


if __name__ == "__main__":
    main()
