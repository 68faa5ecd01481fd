"""How many gunicorn worker processes and threads serve, when the deployment does not say.

functions-framework reads `WORKERS` (default 1) and `THREADS` (default four a CPU) when
it builds its server, after it has imported `main.py`; so the entry point can fill in
what is unset. One process holds the interpreter lock at a time, and a model's compute
fights its own request threads for it: on the forest benchmark, two processes of four
threads served 2.5x to 3.4x what one process of eight did on 2 cores (bench/RESULTS.md).
So the default is one worker process a usable CPU, each with functions-framework's
own thread count (four a CPU): with micro-batching, more threads a process means larger
merged calls, and two processes of eight threads served the forest at 1.6x to 2x two of
four. On one CPU (every Cloud Functions instance under 2 vCPU) that is one process of
four threads: functions-framework's own default, unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

THREADS_PER_CPU = 4


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity, bounded by a cgroup v2 CPU quota.

    A fractional quota (a Cloud Functions instance of 0.583 vCPU) counts as one CPU.
    """
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = count or 1
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, count)


def fill_defaults(env: MutableMapping[str, str], cpus: int) -> None:
    """Sets `WORKERS` and `THREADS` in `env` where they are unset or empty.

    Args:
        env: the environment functions-framework will read (`os.environ`).
        cpus: the CPUs the instance may use.
    """
    if not env.get("WORKERS"):
        env["WORKERS"] = str(cpus)
    if not env.get("THREADS"):
        env["THREADS"] = str(THREADS_PER_CPU * cpus)


def count(env: Mapping[str, str]) -> int:
    """The worker processes gunicorn will fork, from `WORKERS` (1 when it is not a number)."""
    value = env.get("WORKERS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1
