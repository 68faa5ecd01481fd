"""Work per request, this function's handler vs the bare handler, counted by callgrind.

Usage: python bench/instructions.py [--requests 1000] [--warm 200] [--source NAME=FILE ...]

Throughput on a shared 2-core machine moves by several percent between identical
processes; what callgrind counts does not. Each handler is built with functions-framework's
`create_app` (as `functions-framework --target predict` builds it) and called through
WSGI, with no server and no sockets, under `valgrind --tool=callgrind` with its cache and
branch simulation. Instrumentation starts after the import, the load and a first garbage
collection; `--warm` requests then fill the simulated caches, a full collection follows,
and only the next `--requests` are counted: the counters are zeroed before them and
dumped after them by callgrind's client requests, from a 10-line C helper built here with
the system's compiler and valgrind's header. Before each, the log handlers are flushed:
this function's request entries are made and written on a thread of its own
(`log_writer`), and whether that thread ran before the dump was up to the scheduler (one
run counted 55,000 instructions a request fewer than the runs beside it); flushed, every
counted request's line is made inside the count, and no earlier one.

Per request it prints user-space instructions, first-level cache misses, last-level
misses, mispredicted branches, and callgrind's cycle estimate from them
(instructions + 10 x (L1 misses + mispredictions) + 100 x LL misses): what the request
path costs in Flask, functions-framework, the handler and the predictor once warm.
What this leaves out: system calls (the kernel's side of them) and what threads cost each
other; a real server adds gunicorn's own work per request, the same for both.
Needs valgrind and a C compiler (Debian's packages `valgrind` and `gcc`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, add_source_option  # noqa: E402

SOURCES = {"ours": "main.py", "bare": "bench/bare_handler.py"}

_HELPER = """
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(void) { CALLGRIND_DUMP_STATS_AT("measured"); }
"""

# Run under valgrind: build one handler, warm it, and answer the counted requests.
_CALLER = """
import ctypes, gc, io, logging, sys
import functions_framework

helper = ctypes.CDLL(sys.argv[1])
app = functions_framework.create_app("predict", sys.argv[2])
body = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'

def request():
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json", "HTTP_USER_AGENT": "bench",
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False, "wsgi.version": (1, 0),
    }
    answer = app(environ, lambda status, headers, exc_info=None: None)
    out = b"".join(answer).replace(b" ", b"")
    answer.close()
    return out

def flush_logs():
    # Lines a handler's thread makes and writes later are made and written now: the counted
    # requests' lines, all of them, inside the count, whenever that thread would have run.
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", ()):
            handler.flush()

answers = {request() for _ in range(20)}  # the load, and first-time work
gc.collect()
helper.cg_start()
answers |= {request() for _ in range(int(sys.argv[3]))}
gc.collect()
flush_logs()
helper.cg_zero()
answers |= {request() for _ in range(int(sys.argv[4]))}
flush_logs()
helper.cg_dump()
print(answers.pop().decode() if len(answers) == 1 else f"differing answers: {answers}")
"""

# callgrind's own cycle estimate: weights per event.
_WEIGHTS = {"Ir": 1, "I1mr": 10, "D1mr": 10, "D1mw": 10, "ILmr": 100, "DLmr": 100, "DLmw": 100}
_WEIGHTS |= {"Bcm": 10, "Bim": 10}


_COMPILER = os.environ.get("CC", "cc")


def build_helper(directory: Path) -> Path:
    """Compiles the client-request helper into `directory`."""
    source, library = directory / "helper.c", directory / "helper.so"
    source.write_text(_HELPER)
    subprocess.run([_COMPILER, "-O2", "-shared", "-fPIC", "-o", library, source], check=True)
    return library


def count(helper: Path, source: str, warm: int, requests: int, out: Path) -> tuple[dict, str]:
    """Callgrind's events over `requests` warm requests of one handler, and its answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPR_")}
    env.update(PYTHONHASHSEED="0", CPR_LOG_FORMAT="json")
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--cache-sim=yes",
        "--branch-sim=yes",
        f"--callgrind-out-file={out}",
    ]
    command += [sys.executable, "-c", _CALLER, str(helper), source, str(warm), str(requests)]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        own = [line for line in run.stderr.splitlines() if not re.match(r"==\d+==", line)]
        last = "\n".join(own[-5:])
        raise SystemExit(f"counting {source} failed (exit {run.returncode}):\n{last}")
    # callgrind writes a file at exit too; the counted requests are the part their trigger names.
    dumps = [p.read_text() for p in out.parent.glob(out.name + "*")]
    measured = [text for text in dumps if "Trigger: Client Request: measured" in text[:4000]]
    if len(measured) != 1:
        raise RuntimeError(f"expected one dump of the counted requests, found {len(measured)}")
    text = measured[0]
    names = re.search(r"^events: (.*)$", text, re.M).group(1).split()
    values = map(int, re.search(r"^summary: (.*)$", text, re.M).group(1).split())
    return dict(zip(names, values, strict=True)), run.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=200)
    add_source_option(parser, "another handler to count beside the two (a main.py of your own)")
    args = parser.parse_args()
    for tool in ("valgrind", _COMPILER):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} on PATH (Debian: apt-get install valgrind gcc)")
    sources = {**SOURCES, **dict(args.source)}
    with tempfile.TemporaryDirectory(prefix="cpr-bench-instructions-") as scratch:
        helper = build_helper(Path(scratch))

        def run(side: str) -> tuple[dict, str]:
            return count(helper, sources[side], args.warm, args.requests, Path(scratch) / side)

        with ThreadPoolExecutor(max_workers=2) as pool:
            counted = dict(zip(sources, pool.map(run, sources), strict=True))
    answers = {answer for _, answer in counted.values()}
    if len(answers) != 1:
        raise RuntimeError(f"the handlers disagree: {answers}")
    print(
        f"per request, {args.requests} requests after {args.warm} through WSGI (no server), "
        "counted by callgrind with its cache and branch simulation"
    )
    print(
        f"{'':>6} {'instructions':>12} {'':>7} {'L1 misses':>9} {'LL misses':>9} "
        f"{'mispredicted':>12} {'cycle estimate':>14} {'':>7}"
    )
    per = {
        side: {name: events.get(name, 0) / args.requests for name in _WEIGHTS}
        for side, (events, _) in counted.items()
    }
    estimate = {side: sum(p[n] * w for n, w in _WEIGHTS.items()) for side, p in per.items()}
    for side, p in per.items():
        print(
            f"{side:>6} {p['Ir']:>12,.0f} {p['Ir'] / per['bare']['Ir']:>6.3f}x "
            f"{p['I1mr'] + p['D1mr'] + p['D1mw']:>9,.0f} "
            f"{p['ILmr'] + p['DLmr'] + p['DLmw']:>9,.0f} "
            f"{p['Bcm'] + p['Bim']:>12,.0f} {estimate[side]:>14,.0f} "
            f"{estimate[side] / estimate['bare']:>6.3f}x"
        )
    print("(ratios to the bare handler; cycle estimate = instructions + 10 x (L1 misses +")
    print(" mispredicted branches) + 100 x LL misses, callgrind's own weights)")
    print(f"answer: {answers.pop()}")


if __name__ == "__main__":
    main()
