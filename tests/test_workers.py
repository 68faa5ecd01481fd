"""How many gunicorn worker processes and threads serve when the deployment does not say."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests
from conftest import EXAMPLES, IRIS, child_pids, iris_expected

from cpr_function.http import workers


def test_one_cpu_keeps_functions_frameworks_own_default():
    env = {}
    workers.fill_defaults(env, 1)
    assert env == {"WORKERS": "1", "THREADS": "4"}


def test_two_cpus_get_a_worker_each_of_functions_frameworks_threads():
    env = {}
    workers.fill_defaults(env, 2)
    assert env == {"WORKERS": "2", "THREADS": "8"}


def test_what_the_deployment_sets_is_kept():
    env = {"WORKERS": "3", "THREADS": "2"}
    workers.fill_defaults(env, 8)
    assert env == {"WORKERS": "3", "THREADS": "2"}
    env = {"WORKERS": "1", "THREADS": ""}
    workers.fill_defaults(env, 2)
    assert env == {"WORKERS": "1", "THREADS": "8"}


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", 2), ("100000 100000\n", 1), ("58300 100000\n", 1), ("garbled", 2)],
)
def test_a_cgroup_cpu_quota_bounds_the_cpus(tmp_path, cpu_max, expected):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a process allowed on 2 CPUs")
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert min(workers.usable_cpus(tmp_path), 2) == expected


def test_with_nothing_set_each_cpu_gets_a_worker_warmed_before_any_request(function, tmp_path):
    cpus = workers.usable_cpus()
    if cpus < 2:
        pytest.skip("needs 2 CPUs")
    fn = function({"CPR_CACHE_DIR": str(tmp_path / "cache")}, workers=None)
    log = fn.wait_for_log(lambda text: text.count("warm-up: loading") >= cpus, timeout=60)
    assert len(child_pids(fn.proc.pid)) == cpus
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    warmed = {e["pid"] for e in entries if e["message"].startswith("warm-up: loading")}
    assert warmed == child_pids(fn.proc.pid), fn.log()
    expected = iris_expected(EXAMPLES / "model", IRIS)
    for _ in range(4):
        answer = requests.post(f"{fn.url}/", json={"instances": IRIS}, timeout=60)
        assert answer.json() == {"predictions": expected}


def _connections_by_worker(fn) -> dict[int, int]:
    """How many connections to the function each of its worker processes holds open."""
    port = f":{fn.port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(port) and fields[3] == "01":  # ESTABLISHED, this side
            inodes.add(f"socket:[{fields[9]}]")
    held = {}
    for pid in child_pids(fn.proc.pid):
        targets = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                targets.append(os.readlink(fd))
        held[pid] = sum(t in inodes for t in targets)
    return held


def test_connections_opened_at_once_are_spread_over_the_workers(function, tmp_path):
    # A keep-alive client stays on the worker that took its connection: 8 taken by one of
    # two workers leave the other core idle for as long as they send.
    if not Path("/proc/net/tcp").exists():
        pytest.skip("reads Linux's /proc")
    fn = function({"CPR_CACHE_DIR": str(tmp_path / "cache")}, workers=2)
    fn.wait_for_log(lambda text: text.count("warm-up: loading") >= 2, timeout=60)
    expected = iris_expected(EXAMPLES / "model", IRIS[:1])
    body = json.dumps({"instances": IRIS[:1]})
    for burst in range(10):
        clients = [http.client.HTTPConnection("127.0.0.1", fn.port, timeout=60) for _ in range(8)]
        try:
            for client in clients:
                client.connect()
            for client in clients:
                client.request("POST", "/", body, {"Content-Type": "application/json"})
            for client in clients:
                assert json.loads(client.getresponse().read()) == {"predictions": expected}
            held = _connections_by_worker(fn)
            assert sum(held.values()) == 8, held
            assert max(held.values()) - min(held.values()) <= 2, f"burst {burst}: {held}"
        finally:
            for client in clients:
                client.close()
        deadline = time.monotonic() + 10
        while sum(_connections_by_worker(fn).values()) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_a_killed_worker_leaves_the_others_taking_every_connection(function, tmp_path):
    # Balancing must never leave a connection waiting on a worker that is gone.
    if not Path("/proc/net/tcp").exists():
        pytest.skip("reads Linux's /proc")
    fn = function({"CPR_CACHE_DIR": str(tmp_path / "cache")}, workers=2)
    fn.wait_for_log(lambda text: text.count("warm-up: loading") >= 2, timeout=60)
    body = json.dumps({"instances": IRIS[:1]})
    idle = [http.client.HTTPConnection("127.0.0.1", fn.port, timeout=60) for _ in range(4)]
    clients = [http.client.HTTPConnection("127.0.0.1", fn.port, timeout=60) for _ in range(8)]
    try:
        for client in idle:  # kept open, spread over both workers
            client.request("POST", "/", body, {"Content-Type": "application/json"})
            client.getresponse().read()
        held = _connections_by_worker(fn)
        victim = min(held, key=held.get)
        os.kill(victim, signal.SIGKILL)  # as the kernel kills a process out of memory
        started = time.monotonic()
        for client in clients:
            client.request("POST", "/", body, {"Content-Type": "application/json"})
        for client in clients:
            assert client.getresponse().status == 200
        assert time.monotonic() - started < 20
        assert victim not in child_pids(fn.proc.pid)
    finally:
        for client in idle + clients:
            client.close()


def _tree_pss(pid: int) -> int:
    """Proportional memory (kB) of a process and its children: pages shared counted once."""
    total = 0
    for each in (pid, *child_pids(pid)):
        for line in Path(f"/proc/{each}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total


def test_workers_share_the_framework_libraries_the_master_imported(function, tmp_path, iris_dir):
    # scikit-learn imported once in the gunicorn master, before it forks, is one copy for
    # every worker; a framework only found when loading (not configured) is one copy each.
    if not Path("/proc/self/smaps_rollup").exists():
        pytest.skip("reads Linux's /proc")
    held = {}
    for framework in ("scikit-learn", None):
        env = {"CPR_ORIGIN": str(iris_dir), "CPR_CACHE_DIR": str(tmp_path / "cache")}
        if framework:
            env["CPR_FRAMEWORK"] = framework
        fn = function(env, workers=2)
        fn.wait_for_log(lambda text: text.count("warm-up: loading") >= 2, timeout=60)
        for _ in range(20):
            assert fn.predict({"instances": IRIS}).status_code == 200
        held[framework] = _tree_pss(fn.proc.pid)
        master_maps = Path(f"/proc/{fn.proc.pid}/maps").read_text()
        assert ("/sklearn/" in master_maps) == bool(framework), framework
        if framework:
            assert "imported sklearn, sklearn.ensemble" in fn.log()
        fn.stop()
    assert held["scikit-learn"] < 0.85 * held[None], held
