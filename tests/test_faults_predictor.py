"""Predictors that fail, lie about their output, or hang: the process keeps serving the rest."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import child_pids, cmdline, make_tar, models_env
from kit_source import hog_files, kit_files

CLASSES = ("Echo", "Raising", "Short", "NotANumber", "Sleepy", "OpensMissing")


@pytest.fixture(scope="module")
def kit(tmp_path_factory, iris_dir):
    tmp = tmp_path_factory.mktemp("kit")
    return str(iris_dir), str(make_tar(tmp / "kit-0.1.tar.gz", kit_files()))


def _version(kit, cls: str) -> dict:
    origin, package = kit
    return {"origin": origin, "package_uris": [package], "prediction_class": f"kit.{cls}"}


@pytest.fixture
def isolated(function, kit, tmp_path):
    """Each faulty predictor a version in a process of its own, with a 1 s deadline."""
    versions = {cls.lower(): _version(kit, cls) for cls in CLASSES}
    models = {"models": {"kit": {"default_version": "echo", "versions": versions}}}
    env = models_env(tmp_path, models, CPR_PREDICT_TIMEOUT="1")
    fn = function(env, threads=8)
    fn.cache_dir = tmp_path / "cache"
    return fn


def _on(version: str) -> str:
    return f"/v1/projects/p/models/kit/versions/{version}:predict"


def test_faulty_predictors_get_clear_errors_and_the_others_keep_serving(isolated):
    raising = isolated.predict({"instances": [1, 2, 3]}, path=_on("raising"))
    assert raising.status_code == 500
    assert raising.json()["error"]["message"] == (
        "prediction failed: ValueError: instance 0 has the wrong shape"
    )
    # Another count than the instances is answered as it is, as AI Platform did, and logged.
    short = isolated.predict({"instances": [1, 2, 3]}, path=_on("short"))
    assert short.status_code == 200
    assert short.json() == {"predictions": [0.0, 0.0]}
    assert "the predictor returned 2 predictions for 3 instances" in isolated.log()
    assert [s["shim"] for s in isolated.version_status("kit", "short")["compatibility"]] == [
        "prediction count"
    ]
    nan = isolated.predict({"instances": [1, 2, 3, 4]}, path=_on("notanumber"))
    assert nan.status_code == 200
    assert nan.json() == {"predictions": [None, None, None, None]}
    missing = isolated.predict({"instances": [1]}, path=_on("opensmissing"))
    assert missing.status_code == 500
    message = missing.json()["error"]["message"]
    assert message.startswith(
        "prediction failed: FileNotFoundError: [Errno 2] No such file or directory: '<cache>/"
    )
    assert message.endswith("/weights.bin'")
    assert str(isolated.cache_dir) not in message
    echo = isolated.predict({"instances": [7]})
    assert echo.json() == {"predictions": [{"instance": 7, "kwargs": {}}]}


def test_a_predictor_past_the_deadline_is_a_504_and_its_process_is_replaced(isolated):
    assert isolated.predict({"instances": [0]}, path=_on("sleepy")).status_code == 200
    pid = isolated.version_status("kit", "sleepy")["pid"]
    with ThreadPoolExecutor(8) as pool:
        hung = pool.submit(isolated.predict, {"instances": [30]}, path=_on("sleepy"))
        time.sleep(0.2)
        # Other versions answer while one hangs.
        others = [pool.submit(isolated.predict, {"instances": [i]}) for i in range(20)]
        answers = [f.result() for f in others]
        started = time.monotonic()
        answer = hung.result()
        waited = time.monotonic() - started
    print(f"\nwhile one version hung: {sum(a.status_code == 200 for a in answers)} of 20 answered")
    assert [a.json()["predictions"][0]["instance"] for a in answers] == list(range(20))
    assert answer.status_code == 504
    assert answer.json()["error"]["message"] == (
        "model kit version sleepy: the predictor ran past the 1 s deadline "
        "(CPR_PREDICT_TIMEOUT); its process was ended and the next request starts it again"
    )
    assert waited < 5
    again = isolated.predict({"instances": [0]}, path=_on("sleepy"))
    assert again.json() == {"predictions": [0]}
    assert isolated.version_status("kit", "sleepy")["pid"] not in (None, pid)


def test_in_process_a_predictor_past_the_deadline_is_a_504_and_serving_goes_on(
    function, kit, tmp_path
):
    origin, package = kit
    fn = function(
        {
            "CPR_ORIGIN": origin,
            "CPR_PACKAGE_URIS": package,
            "CPR_PREDICTION_CLASS": "kit.Sleepy",
            "CPR_PREDICT_TIMEOUT": "0.5",
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
        },
        threads=4,
    )
    assert fn.predict({"instances": [0]}).status_code == 200
    with ThreadPoolExecutor(4) as pool:
        hung = [pool.submit(fn.predict, {"instances": [5]}) for _ in range(2)]
        time.sleep(0.1)
        quick = [fn.predict({"instances": [0]}) for _ in range(5)]
        late = [f.result() for f in hung]
    assert [q.status_code for q in quick] == [200] * 5
    assert [a.status_code for a in late] == [504, 504]
    assert late[0].json() == {
        "error": "model default version v1: the predictor ran past the 0.5 s deadline "
        "(CPR_PREDICT_TIMEOUT)"
    }
    assert fn.predict({"instances": [0.1]}).json() == {"predictions": [0.1]}


def _workers(master: int) -> set[int]:
    """The master's gunicorn workers, not the processes of versions served apart (nor
    those that ended meanwhile: no command line)."""
    return {pid for pid in child_pids(master) if cmdline(pid) and "worker" not in cmdline(pid)}


def test_a_version_killed_while_loading_is_loaded_apart_and_never_kills_the_worker_again(
    function, kit, tmp_path
):
    import requests

    hog = make_tar(tmp_path / "hog-0.1.tar.gz", hog_files())
    killed = {"origin": kit[0], "package_uris": [str(hog)], "prediction_class": "hog.KilledOnLoad"}
    versions = {"echo": _version(kit, "Echo"), "hog": killed}
    models = {"models": {"kit": {"default_version": "echo", "versions": versions}}}
    # both in the worker, as a lone version is by default
    env = models_env(tmp_path, models, CPR_ISOLATION="none")
    fn = function(env, threads=8)
    assert fn.predict({"instances": [1]}).status_code == 200
    (first_worker,) = _workers(fn.proc.pid)
    # Its first load kills the worker, as the OOM killer would; what was in flight is lost.
    with pytest.raises(requests.ConnectionError):
        fn.predict({"instances": [1]}, path=_on("hog"))
    deadline = time.monotonic() + 30
    while _workers(fn.proc.pid) in (set(), {first_worker}) and time.monotonic() < deadline:
        time.sleep(0.1)
    (worker,) = _workers(fn.proc.pid)
    assert worker != first_worker
    # Known as soon as the new worker is asked, before any request to it.
    noticed = fn.version_status("kit", "hog")
    assert noticed["loaded"] is False and "most likely for memory" in noticed["lastError"]
    assert (
        "s ago (pid " in noticed["lastError"]
        and "ended before the load did" in noticed["lastError"]
    )

    with ThreadPoolExecutor(8) as pool:
        hogs = [pool.submit(fn.predict, {"instances": [1]}, path=_on("hog")) for _ in range(3)]
        echoes = [pool.submit(fn.predict, {"instances": [i]}) for i in range(30)]
        echoed = [f.result() for f in echoes]
        refused = [f.result() for f in hogs]
    assert [a.json()["predictions"][0]["instance"] for a in echoed] == list(range(30))
    for answer in refused:
        assert answer.status_code == 500
        message = answer.json()["error"]["message"]
        assert message.startswith("model kit version hog: its worker process ended (killed by ")
        assert "most likely for memory: the kernel's OOM killer sends SIGKILL" in message
        assert "(its model and packages are " in message and " kB)" in message
    assert _workers(fn.proc.pid) == {worker}, "the worker was not taken down again"
    hog = fn.version_status("kit", "hog")
    assert "most likely for memory" in hog["ownProcessBecause"]
    assert "most likely for memory" in hog["lastError"]
    resource = requests.get(f"{fn.url}/v1/projects/p/models/kit/versions/hog", timeout=30).json()
    assert resource["state"] == "FAILED" and "OOM killer" in resource["errorMessage"]


def test_a_load_stopped_with_its_function_is_not_taken_for_a_kill(function, kit, tmp_path):
    origin, package = kit
    loads = tmp_path / "loads"
    env = {
        "CPR_ORIGIN": origin,
        "CPR_PACKAGE_URIS": package,
        "CPR_PREDICTION_CLASS": "kit.Counting",
        "CPR_CACHE_DIR": str(tmp_path / "cache"),
        "KIT_LOG": str(loads),
        "KIT_SLOW": "10",
    }
    fn = function({**env, "CPR_WARMUP": "true"})  # loaded at start, in a thread of its own
    deadline = time.monotonic() + 30
    while not (loads.exists() and loads.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert loads.exists(), "the warm-up load began"
    fn.stop()  # SIGTERM, as Ctrl-C or a scale-down would send, with the load under way
    assert not list((tmp_path / "cache" / ".loading").glob("*.json"))

    again = function({**env, "KIT_SLOW": "0"})
    assert again.predict({"instances": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200
    status = again.version_status()
    assert not status.get("ownProcessBecause") and not status.get("lastError"), status


def test_at_sigterm_requests_to_a_version_apart_all_finish_within_the_grace(
    function, kit, tmp_path
):
    import signal

    versions = {"echo": _version(kit, "Echo"), "sleepy": _version(kit, "Sleepy")}
    models = {"models": {"kit": {"default_version": "echo", "versions": versions}}}
    env = models_env(tmp_path, models)
    fn = function(env, threads=8)
    assert fn.status()["isolation"] == "process"
    assert fn.predict({"instances": [0]}, path=_on("sleepy")).status_code == 200
    with ThreadPoolExecutor(8) as pool:
        # Eight requests of 2 s each: one after the other they would take 16 s, past the
        # 10 s Cloud Run gives an instance between SIGTERM and SIGKILL.
        calls = [pool.submit(fn.predict, {"instances": [2]}, path=_on("sleepy")) for _ in range(8)]
        time.sleep(0.5)
        fn.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        answers = [c.result() for c in calls]
        fn.proc.wait(30)
        took = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * 8
    assert took < 10, f"the function took {took:.1f} s to stop"


@pytest.mark.parametrize("isolation", ["none", "process"])
def test_functions_framework_request_deadline_is_answered_504(function, kit, tmp_path, isolation):
    """functions-framework's deadline (THREADED_TIMEOUT_ENABLED with CLOUD_RUN_TIMEOUT_SECONDS)
    raises an exception in the request's thread; it is answered as a deadline, not as the
    predictor's failure nor as an internal error, and the process serves on: the predictor
    in the request's process, or in a process of its own while the request's thread waits
    for its answer (two versions)."""
    versions = {"sleepy": _version(kit, "Sleepy")}
    if isolation == "process":
        versions["echo"] = _version(kit, "Echo")
    models = {"models": {"kit": {"default_version": "sleepy", "versions": versions}}}
    env = models_env(
        tmp_path, models, THREADED_TIMEOUT_ENABLED="true", CLOUD_RUN_TIMEOUT_SECONDS="1"
    )
    served = function(env, threads=4)
    assert served.status()["isolation"] == isolation
    assert served.predict({"instances": [0]}).status_code == 200
    late = served.predict({"instances": [2]})
    assert late.status_code == 504
    assert late.json() == {
        "error": "the request ran past functions-framework's 1 s deadline "
        "(CLOUD_RUN_TIMEOUT_SECONDS, with THREADED_TIMEOUT_ENABLED=true)"
    }
    assert served.predict({"instances": [0]}).json() == {"predictions": [0]}
