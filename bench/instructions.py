"""Instructions per request, this function's handler vs the bare handler, counted by callgrind.

Usage: python bench/instructions.py [--requests 2000] [--warm 1000]

Throughput on a shared 2-core machine moves by several percent between identical
processes; instruction counts do not. Each handler is built with functions-framework's
`create_app` (as `functions-framework --target predict` builds it) and called through
WSGI, with no server and no sockets, under `valgrind --tool=callgrind`: once answering
`--warm` requests and once answering `--requests` more, so that the difference over the
count is what a request costs in user-space instructions once warm (Flask,
functions-framework, the handler, the predictor, and the garbage collections requests
cause). The warm requests include the first, which loads the model, and the full
collection that follows a load: a one-time cost that a short count would spread over
every request.
What this leaves out: system calls (the kernel's side of them) and what threads cost each
other; a real server adds gunicorn's own work per request, the same for both.
Needs valgrind (Debian's package `valgrind`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = {"ours": "main.py", "bare": "bench/bare_handler.py"}

# Run under valgrind: build one handler and answer `count` requests.
_CALLER = """
import io, sys
import functions_framework

app = functions_framework.create_app("predict", sys.argv[1])
body = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
answers = set()
for _ in range(int(sys.argv[2])):
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json", "HTTP_USER_AGENT": "bench",
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False, "wsgi.version": (1, 0),
    }
    answer = app(environ, lambda status, headers, exc_info=None: None)
    answers.add(b"".join(answer).replace(b" ", b""))
    answer.close()
print(answers.pop().decode() if len(answers) == 1 else f"differing answers: {answers}")
"""


def instructions(source: str, count: int) -> tuple[int, str]:
    """User-space instructions of a whole run answering `count` requests, and its answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPR_")}
    env.update(PYTHONHASHSEED="0", CPR_LOG_FORMAT="json")
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        + [sys.executable, "-c", _CALLER, source, str(count)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(re.search(r"Collected : (\d+)", run.stderr).group(1)), run.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=1000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind on PATH (Debian: apt-get install valgrind)")
    total = args.warm + args.requests
    runs = [(side, count) for side in SOURCES for count in (args.warm, total)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counted = pool.map(lambda run: instructions(SOURCES[run[0]], run[1]), runs)
        done = dict(zip(runs, counted, strict=True))
    per_request = {
        side: (done[(side, total)][0] - done[(side, args.warm)][0]) / args.requests
        for side in SOURCES
    }
    answers = {done[(side, total)][1] for side in SOURCES}
    if len(answers) != 1:
        raise RuntimeError(f"the handlers disagree: {answers}")
    print(
        f"instructions per request, {args.requests} requests after {args.warm} through WSGI "
        "(no server), counted by callgrind"
    )
    for side, count in per_request.items():
        print(f"{side:>5} {count:>12,.0f}  {count / per_request['bare']:.3f}x bare")
    print(f"answer: {answers.pop()}")


if __name__ == "__main__":
    main()
