"""Warm overhead: this function vs a hand-written function serving the same predictor.

Usage: python bench/overhead.py [--seconds 3] [--rounds 6] [--generator python|wrk] [--log-reader]
                                [--no-pin] [--source NAME=FILE ...]

Both are `functions-framework --target predict` processes with the same THREADS and
WORKERS: this repository's main.py with no CPR_* variable (the bundled example, loaded
from its package), and bench/bare_handler.py, which loads the example's predictor once
from examples/custom_code and does only json.loads, predict and json.dumps per request.
A second process of the bare handler runs as a control: its ratio to the first is what
two identical processes differ by in this run (noise, and where each landed in memory),
the margin within which the main ratio says little. A second process of this function
has CPR_REQUEST_LOG=errors, so its answers of 200 write no log entry. A fifth process,
bench/alternate_handler.py, answers every other request with each of the two handlers
and adds up the CPU time each spends: the same interpreter, memory and moment for both,
so the difference is the overhead alone. All answers are checked equal first; then each
process is loaded with 1-instance bodies over 1 and 8 keep-alive connections, rounds
rotating which goes first, so that machine noise falls on all alike (evenly when the
rounds are a multiple of the five processes). CPU is the gunicorn
worker's user and system time over each run, per request. The load comes from
`harness.load` (a Python thread per connection) or, with `--generator wrk`, from wrk.
Each process's stderr goes to /dev/null, or with `--log-reader` to a pipe that another
process reads, as a log agent would (then every request's log entry wakes that reader).
Each `--source NAME=FILE` adds a process serving FILE (a main.py of your own, a variant
of this function) with this function's settings, reported against the bare handler as
the CPR_REQUEST_LOG=errors one is: `--source two-sends=bench/two_sends.py` measures
gunicorn's own two sends a response beside the one send the function makes.

With two CPUs or more, the processes served run on the last CPU and the load (wrk, or
the Python threads) on the others, unless `--no-pin`: a 1-vCPU instance's shape, where
the load never takes the server's CPU and no process moves between CPUs mid-round. On
a noisy 2-core machine, unpinned rounds at 1 connection ranged 0.74x to 1.17x and
pinned ones 0.93x to 0.97x (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import GENERATORS, REPO, Function, Load, Summary, add_source_option, load  # noqa: E402

ROW = [5.1, 3.5, 1.4, 0.2]
BODY = {"instances": [ROW]}
CONNECTIONS = (1, 8)
SETTINGS = {"WORKERS": "1"}
THREADS = 8


def cpu_seconds(pid: int) -> float:
    """User plus system time of a process and its reaped children (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def worker_pid(fn: Function) -> int:
    """The gunicorn worker answering for a function (its one child)."""
    children = Path(f"/proc/{fn.proc.pid}/task/{fn.proc.pid}/children").read_text().split()
    return int(children[0])


def measure(functions: dict[str, Function], *, rounds: int, seconds: float, generator: str) -> dict:
    """Loads each function in turn at each connection count, `rounds` times over.

    Returns:
        Per side and connection count, one (load, worker CPU seconds per request, the
        alternating process's handler CPU per side or None) per round.
    """
    results: dict[tuple[str, int], list[tuple[Load | Summary, float, dict | None]]] = {}
    pids = {side: worker_pid(fn) for side, fn in functions.items()}
    sides = list(functions)
    for round_ in range(rounds):
        shift = round_ % len(sides)
        order = sides[shift:] + sides[:shift]
        for connections in CONNECTIONS:
            for side in order:
                fn = functions[side]
                split = fn.call("/cpu") if side == "alternating" else None  # counts anew
                before = cpu_seconds(pids[side])
                run = GENERATORS[generator](
                    fn.port, "/predict", BODY, connections=connections, seconds=seconds
                )
                cpu = (cpu_seconds(pids[side]) - before) / run.requests
                split = fn.call("/cpu") if side == "alternating" else None
                results.setdefault((side, connections), []).append((run, cpu, split))
    return results


def report(
    results: dict, *, rounds: int, seconds: float, generator: str, sources: dict[str, str]
) -> None:
    median = statistics.median

    def ratios(side: str, connections: int) -> list[float]:
        pairs = zip(results[(side, connections)], results[("bare", connections)], strict=True)
        return sorted(o.throughput / b.throughput for (o, *_), (b, *_) in pairs)

    def versus_bare(side: str, connections: int) -> str:
        """The median throughput ratio to the bare handler, its range, and the p50 added (ms)."""
        pairs = zip(results[(side, connections)], results[("bare", connections)], strict=True)
        added = median((o.p50 - b.p50) * 1000 for (o, *_), (b, *_) in pairs)
        spread = ratios(side, connections)
        return (
            f"{median(spread):>16.3f}x {f'({spread[0]:.2f}-{spread[-1]:.2f})':>13} {added:>10.3f}"
        )

    print(
        "this function vs a bare functions-framework handler, the bundled example, 1 instance, "
        f"THREADS={THREADS}, {rounds} rounds of {seconds:g}s, load from {generator}"
    )
    print(
        f"{'conns':>5} {'throughput ratio':>17} {'(range)':>13} {'p50 added':>10} "
        f"{'ours p50':>9} {'bare p50':>9} {'ours p99':>9} {'bare p99':>9} "
        f"{'ours cpu':>9} {'bare cpu':>9} {'control':>8}"
    )
    print(f"{'':>42}(ms){'':>36}(ms){'':>6}(us/req)")
    for connections in CONNECTIONS:
        ours, bare = results[("ours", connections)], results[("bare", connections)]
        print(
            f"{connections:>5} {versus_bare('ours', connections)} "
            f"{median(o.p50 for o, *_ in ours) * 1000:>9.3f} "
            f"{median(b.p50 for b, *_ in bare) * 1000:>9.3f} "
            f"{median(o.p99 for o, *_ in ours) * 1000:>9.3f} "
            f"{median(b.p99 for b, *_ in bare) * 1000:>9.3f} "
            f"{median(c for _, c, _ in ours) * 1e6:>9.0f} "
            f"{median(c for _, c, _ in bare) * 1e6:>9.0f} "
            f"{median(ratios('control', connections)):>7.3f}x"
        )
    print("control: a second bare handler process against the first (identical code)")
    print()
    variants = {
        "quiet": "this function with CPR_REQUEST_LOG=errors (no log entry for an answer of 200)"
    }
    variants.update({name: f"{name}: {file}" for name, file in sources.items()})
    for side, title in variants.items():
        print(title)
        print(f"{'conns':>5} {'throughput ratio':>17} {'(range)':>13} {'p50 added':>10} {'cpu':>9}")
        for connections in CONNECTIONS:
            print(
                f"{connections:>5} {versus_bare(side, connections)} "
                f"{median(c for _, c, _ in results[(side, connections)]) * 1e6:>9.0f}"
            )
        print()
    print("one process answering with the two handlers in turn: CPU in the handler (us/request)")
    print(f"{'conns':>5} {'ours':>7} {'bare':>7} {'added':>7} {'as a throughput ratio':>22}")
    for connections in CONNECTIONS:
        splits = [split for _, _, split in results[("alternating", connections)]]
        ours, bare = median(s["ours"] for s in splits), median(s["bare"] for s in splits)
        # What the added CPU would cost the bare process, whose whole request takes `whole`.
        whole = median(c for _, c, _ in results[("bare", connections)]) * 1e6
        print(
            f"{connections:>5} {ours:>7.1f} {bare:>7.1f} {ours - bare:>7.1f} "
            f"{whole / (whole + ours - bare):>21.3f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="python")
    parser.add_argument(
        "--log-reader",
        action="store_true",
        help="each process's stderr a pipe read by another process, not /dev/null",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the processes served on the last CPU, the load on the others (default: on)",
    )
    add_source_option(
        parser, "another function to load beside the others, with this function's settings"
    )
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pinned = args.pin and len(cpus) > 1
    sources = dict(args.source)
    taken = {"ours", "quiet", "bare", "control", "alternating"} & set(sources)
    if taken:
        parser.error(f"--source names {sorted(taken)} are the benchmark's own; choose others")
    bench = REPO / "bench"
    with tempfile.TemporaryDirectory(prefix="cpr-bench-overhead-") as cache:
        functions: dict[str, Function] = {}
        try:
            if pinned:  # on Linux this thread's: the processes it starts inherit it
                os.sched_setaffinity(0, cpus[-1:])
            settings = {**SETTINGS, "CPR_CACHE_DIR": cache}
            common = {"threads": THREADS, "log_reader": args.log_reader}
            functions["ours"] = Function(settings, **common)
            functions["quiet"] = Function({**settings, "CPR_REQUEST_LOG": "errors"}, **common)
            for side in ("bare", "control"):
                functions[side] = Function(SETTINGS, source=bench / "bare_handler.py", **common)
            for name, file in sources.items():
                functions[name] = Function(settings, source=REPO / file, **common)
            functions["alternating"] = Function(
                settings, source=bench / "alternate_handler.py", **common
            )
            if pinned:  # the load's threads and wrk start from this thread from now on
                os.sched_setaffinity(0, cpus[:-1])
            answers = [fn.call("/predict", BODY) for fn in functions.values()]
            answers.append(functions["alternating"].call("/predict", BODY))  # the other side
            if len({json.dumps(a) for a in answers}) != 1:
                raise RuntimeError(f"the functions disagree: {answers}")
            for fn in functions.values():  # first requests out of the way on all
                load(fn.port, "/predict", BODY, connections=8, seconds=0.5)
            results = measure(
                functions, rounds=args.rounds, seconds=args.seconds, generator=args.generator
            )
        finally:
            for fn in functions.values():
                fn.stop()
    placed = f"served on CPU {cpus[-1]}, load on {','.join(map(str, cpus[:-1]))}"
    report(
        results,
        rounds=args.rounds,
        seconds=args.seconds,
        generator=f"{args.generator}, {placed if pinned else 'unpinned'}",
        sources=sources,
    )


if __name__ == "__main__":
    main()
