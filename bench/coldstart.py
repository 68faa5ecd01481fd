"""Cold start on a warm cache: process start to first prediction, this function vs a floor.

Usage: python bench/coldstart.py [--rounds 7]

This function: `functions-framework --target predict` on main.py with no CPR_* variable
(the bundled example), restarted on a cache that a first, unmeasured start filled (its
package already unpacked there), timed from just before the process is started until the
answer to its first POST /predict has arrived. The request goes out as soon as the port
takes connections. The floor: `python bench/floor.py`, which imports the same libraries,
calls the example's `from_path` on its model directory and predicts once, without a
server, timed until its printed answer arrives. Both answers are checked equal. Rounds
alternate which goes first; the ratio is the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, free_port  # noqa: E402

BODY = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
DEADLINE = 120.0


def _environment(extra: dict[str, str]) -> dict[str, str]:
    # Bytecode is cached (by the unmeasured first runs), as on a deployed function.
    skipped = ("PYTHONDONTWRITEBYTECODE",)
    kept = {k: v for k, v in os.environ.items() if not k.startswith("CPR_") and k not in skipped}
    return {**kept, **extra}


def _request(port: int, method: str, path: str, body: dict | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        payload = json.dumps(body) if body is not None else None
        conn.request(method, path, payload, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = json.loads(answer.read())
        if answer.status != 200:
            raise RuntimeError(f"{method} {path}: {answer.status}: {data}")
        return data
    finally:
        conn.close()


def ours(cache: str) -> dict:
    """One start of the function: seconds to listening and to the first answer, its phases."""
    port = free_port()
    command = [sys.executable, "-m", "functions_framework", "--target", "predict"]
    command += ["--source", str(REPO / "main.py"), "--host", "127.0.0.1", "--port", str(port)]
    env = _environment({"CPR_CACHE_DIR": cache, "THREADS": "8", "WORKERS": "1"})
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the function exited with {proc.returncode}")
            if time.perf_counter() - start > DEADLINE:
                raise RuntimeError(f"the function did not listen within {DEADLINE:.0f}s")
            with contextlib.suppress(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port)).close()
                break
            time.sleep(0.002)
        listening = time.perf_counter() - start
        answer = _request(port, "POST", "/predict", BODY)
        answered = time.perf_counter() - start
        version = _request(port, "GET", "/")["models"][0]["versions"][0]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "seconds": answered,
        "listening": listening,
        "answer": answer,
        "phases": version["coldStartSeconds"],
        "unpacked": version["cache"]["unpacked"],
    }


def floor() -> dict:
    """One run of bench/floor.py: seconds until its prediction is printed."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "floor.py")],
        env=_environment({}),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    line = proc.stdout.readline()
    seconds = time.perf_counter() - start
    proc.stdout.close()
    if proc.wait(DEADLINE) != 0 or not line:
        raise RuntimeError(f"bench/floor.py failed with {proc.returncode}")
    return {"seconds": seconds, **json.loads(line)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cpr-bench-coldstart-") as cache:
        first = ours(cache)  # fills the cache; it and a floor run also warm the page cache
        if first["answer"] != floor()["answer"]:
            raise RuntimeError("the function and the floor disagree")
        runs: dict[str, list[dict]] = {"ours": [], "floor": []}
        for round_ in range(args.rounds):
            sides = ["ours", "floor"] if round_ % 2 == 0 else ["floor", "ours"]
            for side in sides:
                runs[side].append(ours(cache) if side == "ours" else floor())
    if any(run["unpacked"] for run in runs["ours"]):
        raise RuntimeError("a measured start unpacked the package: the cache was not warm")
    report(runs, args.rounds)


def report(runs: dict[str, list[dict]], rounds: int) -> None:
    median = statistics.median

    def phases(side: str) -> str:
        names = runs[side][0]["phases"]
        return ", ".join(f"{n} {median(r['phases'][n] for r in runs[side]):.3f}s" for n in names)

    ratios = sorted(
        o["seconds"] / f["seconds"] for o, f in zip(runs["ours"], runs["floor"], strict=True)
    )
    print(
        "cold start on a warm cache, the bundled example: process start to first prediction, "
        f"{rounds} rounds"
    )
    print(f"floor (bench/floor.py): {median(r['seconds'] for r in runs['floor']):.3f}s")
    print(f"  in it: {phases('floor')}")
    print(
        f"this function:          {median(r['seconds'] for r in runs['ours']):.3f}s "
        f"(port open after {median(r['listening'] for r in runs['ours']):.3f}s)"
    )
    print(f"  its first request's load phases: {phases('ours')}")
    print(f"ratio: {median(ratios):.2f}x (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
