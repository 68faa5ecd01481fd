"""The benchmark commands of docs/benchmarks.md still run: each script of bench/, briefly.

Short runs measure nothing worth keeping; they catch a script broken by a change to the
code it measures (a renamed setting, a moved module, a different status body) before
someone spends minutes of load to find out. What each run's table says is checked for
shape, and for what holds at any length: the answers agree, nothing heavy is imported
with main.py, the cache is emptied by CPR_DELETE_AFTER_LOAD. bench/instructions.py
(valgrind) and `--generator wrk` need Debian packages that CI does not install.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RATIO = r"\d+\.\d+x"

# script, brief arguments, lines the output must hold (regular expressions)
RUNS = {
    "batch": (
        ["--instances", "500", "--model", "example"],
        [
            rf"^ +beam-{n} / {side} +{RATIO}"
            for n, side in ((1, "floor"), (2, "beam-1"), (2, "online"))
        ]
        + [rf"^ +the job at its defaults \(beam-2\) / online +{RATIO}"],
    ),
    "overhead": (
        ["--seconds", "0.2", "--rounds", "1", "--source", "two-sends=bench/two_sends.py"],
        # each connection count in the default's table, CPR_REQUEST_LOG=errors' and the source's
        [(rf"^ +{c} +{RATIO} +\(", 3) for c in (1, 8)]
        + ["^two-sends: bench/two_sends.py$", "in turn"]
        # the processes served on one CPU and the load on the others, where there are two
        + [
            r"load from python, served on CPU \d+, load on [\d,]+$"
            if len(os.sched_getaffinity(0)) > 1
            else r"load from python, unpinned$"
        ],
    ),
    "microbatch": (
        ["--seconds", "0.2", "--rounds", "1", "--model", "example", "--ceiling"],
        [rf"^ +{c} +{RATIO} +\d+ +\d+" for c in (1, 2, 8, 32)],
    ),
    "isolation": (
        ["--seconds", "0.2", "--rounds", "1"],
        [rf"^ +1 +8 +{RATIO}", rf"^first request on a warm cache: {RATIO}"],
    ),
    "forwarding": (
        ["--instances", "200", "--rounds", "1"],
        [rf"^ +forward:.*over sequential +{RATIO}", rf"^ +client:.*over sequential +{RATIO}"],
    ),
    "download": (
        ["--rounds", "1", "--files", "10", "--megabytes", "2"],
        [r"^a model directory of 10 objects, 2\.0 MB", r"^ +ours +[\d.]+ +[\d.]+ +1\.00x"],
    ),
    "memory": (
        ["--megabytes", "5", "--rounds", "1"],
        [r"^ +cache at rest \(MB\) +5\.00 +0\.00", r"downloaded after a restart \(MB\)"],
    ),
    "coldstart": (["--rounds", "1"], [rf"^ratio: {RATIO}"]),
    "imports": (
        ["--rounds", "1"],
        [rf"^{mode}\s.*heavy: none$" for mode in ("example", "single model", "models file")]
        + [r"^forwarding\s.*heavy: none$"],
    ),
    "legacy_load": (
        ["--rounds", "1"],
        [rf"^{name} +[\d.]+ +[\d.]+ +{RATIO}" for name in ("booster-500", "forest-100")],
    ),
    "threads": (
        ["--seconds", "0.3", "--rounds", "1", "--connections", "1,8", "--generator", "python"],
        [rf"^ +{c} +1\.00x +\d+/s" for c in (1, 8)],
    ),
    "mlflow_serve": (
        ["--seconds", "0.2", "--rounds", "1"],
        [rf"^ +{n} +{c} +{RATIO}" for n in (1, 100) for c in (1, 8)],
    ),
}


@pytest.mark.parametrize("script", sorted(RUNS))
def test_a_benchmark_runs_and_prints_its_table(script):
    arguments, expected = RUNS[script]
    out, err, code = _run([sys.executable, str(REPO / "bench" / f"{script}.py"), *arguments])
    assert code == 0, err[-3000:]
    for wanted in expected:
        pattern, times = wanted if isinstance(wanted, tuple) else (wanted, 1)
        found = len(re.findall(pattern, out, re.MULTILINE))
        assert found >= times, f"{times} lines should match {pattern!r}, {found} do:\n{out}"


def _run(command: list[str], timeout: float = 270) -> tuple[str, str, int]:
    """Runs a bench script; past the timeout, interrupts it, so that its `finally` blocks
    stop the servers it started, and kills what is left of its process group."""
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        pytest.fail(f"{command[1]} ran past {timeout} s")
    return out, err, proc.returncode
