"""The README's benchmark commands still run: each script of bench/, briefly.

Short runs measure nothing worth keeping; they catch a script broken by a change to the
code it measures (a renamed setting, a moved module, a different status body) before
someone spends minutes of load to find out. What each run's table says is checked for
shape, and for what holds at any length: the answers agree, nothing heavy is imported
with main.py, the cache is emptied by CPR_DELETE_AFTER_LOAD. bench/instructions.py
(valgrind) and `--generator wrk` need Debian packages that CI does not install.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RATIO = r"\d+\.\d+x"

# script, brief arguments, lines the output must hold (regular expressions)
RUNS = {
    "overhead": (
        ["--seconds", "0.2", "--rounds", "1"],
        [rf"^\s+1\s+{RATIO}", rf"^\s+8\s+{RATIO}", "CPR_REQUEST_LOG=errors", "in turn"],
    ),
    "microbatch": (
        ["--seconds", "0.2", "--rounds", "1", "--model", "example", "--ceiling"],
        [rf"^\s+{c}\s+{RATIO}\s+\d+\s+\d+" for c in (1, 2, 8, 32)],
    ),
    "isolation": (
        ["--seconds", "0.2", "--rounds", "1"],
        [rf"^\s+1\s+8\s+{RATIO}", rf"^first request on a warm cache: {RATIO}"],
    ),
    "forwarding": (
        ["--instances", "200", "--rounds", "1"],
        [rf"^\s+forward:.*over sequential\s+{RATIO}", rf"^\s+client:.*over sequential\s+{RATIO}"],
    ),
    "download": (
        ["--rounds", "1", "--files", "10", "--megabytes", "2"],
        [r"^a model directory of 10 objects, 2\.0 MB", r"^\s+ours\s+[\d.]+\s+[\d.]+\s+1\.00x"],
    ),
    "memory": (
        ["--megabytes", "5", "--rounds", "1"],
        [r"^\s+cache at rest \(MB\)\s+5\.00\s+0\.00", r"downloaded after a restart \(MB\)"],
    ),
    "coldstart": (["--rounds", "1"], [rf"^ratio: {RATIO}"]),
    "imports": (
        ["--rounds", "1"],
        [rf"^{mode}\s.*heavy: none$" for mode in ("example", "single model", "models file")]
        + [r"^forwarding\s.*heavy: none$"],
    ),
    "mlflow_serve": (
        ["--seconds", "0.2", "--rounds", "1"],
        [rf"^\s+{n}\s+{c}\s+{RATIO}" for n in (1, 100) for c in (1, 8)],
    ),
}


@pytest.mark.parametrize("script", sorted(RUNS))
def test_a_benchmark_runs_and_prints_its_table(script):
    arguments, expected = RUNS[script]
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / f"{script}.py"), *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    missing = [p for p in expected if not re.search(p, done.stdout, re.MULTILINE)]
    assert not missing, f"no line matches {missing} in:\n{done.stdout}"
