"""How many gunicorn worker processes and threads serve when the deployment does not say."""

from __future__ import annotations

import json
import os

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
