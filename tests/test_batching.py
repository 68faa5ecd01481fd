"""Merging concurrent requests into one predict call: the Batcher with threads, then a real
functions-framework process with 32 threads answering 32 concurrent requests."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from conftest import make_tar
from kit_source import kit_files

from cpr_function.predictor import Routine, VertexRoutine
from cpr_function.serving import batching
from cpr_function.serving.batching import Batched, Batcher

# The Batcher, in this process


class Recording:
    """A call that records the groups it is given; the first call waits for `release`."""

    def __init__(self, fail=lambda group: False):
        self.calls: list[tuple[list[list], dict]] = []
        self.release = threading.Event()
        self._fail = fail

    def __call__(self, groups: list[list], kwargs: dict) -> list:
        self.calls.append(([list(g) for g in groups], kwargs))
        if len(self.calls) == 1:
            assert self.release.wait(10)
        if any(self._fail(g) for g in groups):
            raise ValueError(f"cannot predict {groups}")
        return [[(i, kwargs) for i in group] for group in groups]


def _queue_behind_a_running_call(batcher: Batcher, call: Recording, requests: list) -> list:
    """Starts a first request whose call blocks, queues `requests` (instances, kwargs) behind
    it one after the other, releases the call, and returns every request's outcome."""
    outcomes: dict[int, object] = {}

    def send(n: int, instances: list, kwargs: dict) -> None:
        try:
            outcomes[n] = batcher.predict(instances, kwargs)
        except Exception as exc:  # noqa: BLE001 - compared by the tests
            outcomes[n] = exc

    threads = [threading.Thread(target=send, args=(0, ["first"], {}))]
    threads[0].start()
    _until(lambda: len(call.calls) == 1)
    for n, (instances, kwargs) in enumerate(requests, start=1):
        threads.append(threading.Thread(target=send, args=(n, instances, kwargs)))
        threads[-1].start()
        _until(lambda n=n: len(batcher._queue) == n)  # queued in this order
    call.release.set()
    for thread in threads:
        thread.join(10)
    return [outcomes[n] for n in range(len(requests) + 1)]


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_lone_request_is_predicted_at_once_however_long_the_wait():
    call = Recording()
    call.release.set()
    batcher = Batcher(call, max_size=64, wait=5.0)
    start = time.monotonic()
    assert batcher.predict([1, 2], {"k": 1}) == [(1, {"k": 1}), (2, {"k": 1})]
    assert batcher.predict([3], {}) == [(3, {})]
    assert time.monotonic() - start < 1.0
    assert call.calls == [([[1, 2]], {"k": 1}), ([[3]], {})]


def test_requests_queued_behind_a_running_call_share_the_next_one_in_order():
    call = Recording()
    batcher = Batcher(call, max_size=64, wait=0.0)
    outcomes = _queue_behind_a_running_call(batcher, call, [([n, n], {}) for n in range(10)])
    assert outcomes == [[("first", {})]] + [[(n, {}), (n, {})] for n in range(10)]
    assert call.calls[1] == ([[n, n] for n in range(10)], {})
    assert len(call.calls) == 2
    assert batcher.status() == {
        "maxSize": 64,
        "waitMs": 0.0,
        "calls": 2,
        "requests": 11,
        "largestCall": 20,
    }


def test_only_requests_with_the_same_keyword_arguments_share_a_call():
    call = Recording()
    batcher = Batcher(call, max_size=64, wait=0.0)
    kinds = [{"k": 1}, {"k": 1.0}, {"k": True}, {}, {"k": 1}, {"k": "1"}, {}, {"k": 1.0}]
    requests = [([n], kinds[n]) for n in range(len(kinds))]
    outcomes = _queue_behind_a_running_call(batcher, call, requests)
    for (instances, kwargs), outcome in zip(requests, outcomes[1:], strict=True):
        assert outcome == [(instances[0], kwargs)]
        assert json.dumps(outcome[0][1]) == json.dumps(kwargs)  # 1, 1.0 and true stay apart
    assert [c[0] for c in call.calls[1:]] == [[[0], [4]], [[1], [7]], [[2]], [[3], [6]], [[5]]]


def test_a_call_holds_at_most_max_size_instances_and_a_larger_request_goes_alone():
    call = Recording()
    batcher = Batcher(call, max_size=4, wait=0.0)
    requests = [([n], {}) for n in range(6)] + [([6, 6, 6], {})]
    outcomes = _queue_behind_a_running_call(batcher, call, requests)
    assert outcomes[1:] == [[(n, {})] * len(i) for n, (i, _) in enumerate(requests)]
    assert [c[0] for c in call.calls[1:]] == [[[0], [1], [2], [3]], [[4], [5]], [[6, 6, 6]]]
    # A request of max_size instances or more is a call already: it does not queue.
    call.release.clear()
    call.calls.clear()
    blocked = threading.Thread(target=batcher.predict, args=(["slow"], {}))
    blocked.start()
    _until(lambda: len(call.calls) == 1)
    assert batcher.predict([7, 7, 7, 7], {}) == [(7, {})] * 4
    call.release.set()
    blocked.join(10)


def test_a_failed_merged_call_is_made_again_for_each_request_alone():
    call = Recording(fail=lambda group: "bad" in group)
    batcher = Batcher(call, max_size=64, wait=0.0)
    outcomes = _queue_behind_a_running_call(batcher, call, [([1], {}), (["bad"], {}), ([3], {})])
    assert outcomes[1] == [(1, {})]
    assert isinstance(outcomes[2], ValueError)
    assert str(outcomes[2]) == "cannot predict [['bad']]"
    assert outcomes[3] == [(3, {})]
    assert [c[0] for c in call.calls[1:]] == [[[1], ["bad"], [3]], [[1]], [["bad"]], [[3]]]


def test_an_error_every_call_raises_reaches_every_request_of_the_call():
    call = Recording(fail=lambda group: True)
    call.release.set()
    batcher = Batcher(call, max_size=64, wait=0.0)
    gate = threading.Event()
    original = call.__call__

    def slow_first(groups, kwargs):
        gate.wait(10)
        return original(groups, kwargs)

    batcher._call = slow_first
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(batcher.predict, [n], {}) for n in range(8)]
        _until(lambda: len(batcher._queue) == 7)
        gate.set()
        errors = [f.exception(10) for f in futures]
    assert [str(e) for e in errors] == [f"cannot predict [[{n}]]" for n in range(8)]
    assert len({id(e) for e in errors}) == 8  # each request raises its own error


class _Rows:
    def __init__(self, model=lambda rows: [r * 10 for r in rows]):
        self._model = model

    def predict(self, instances, **kwargs):
        return self._model(instances)


def test_predictions_of_a_merged_call_are_cut_back_into_each_requests_rows():
    for predictions, parts in [
        ([1, 2, 3], [[1], [2, 3]]),
        ((1, 2, 3), [(1,), (2, 3)]),
        (np.arange(6).reshape(3, 2), [[[0, 1]], [[2, 3], [4, 5]]]),
    ]:
        cut = batching.split(predictions, [1, 2])
        assert [np.asarray(p).tolist() for p in cut] == [np.asarray(p).tolist() for p in parts]
        assert all(type(p) is type(predictions) for p in cut)
    frame = pd.DataFrame({"x": [1, 2, 3]}, index=[7, 8, 9])
    assert [p["x"].tolist() for p in batching.split(frame, [2, 1])] == [[1, 2], [3]]
    assert [p.tolist() for p in batching.split(frame["x"], [1, 2])] == [[1], [2, 3]]
    for unsplittable in ({"a": 1}, 3, np.float64(2.0), "abc", [1, 2]):
        with pytest.raises(ValueError):
            batching.split(unsplittable, [1, 2])


def test_a_batched_routine_answers_as_the_routine_alone_does():
    batched = Batched(Routine(_Rows()), max_size=8, wait=0.0)
    assert batched.respond({"instances": [1, 2]}) == {"predictions": [10, 20]}
    assert batched.predict([[1], [2, 3]], {}) == [[10], [20, 30]]

    # A predictor answering another count is answered as it is (as AI Platform did),
    # and a merged call of it is made again request by request: no request gets another's.
    short = Batched(Routine(_Rows(lambda rows: [r * 10 for r in rows[:-1]])), max_size=8, wait=0.0)
    assert short.merges
    assert short.predict([[1], [2, 3]], {}) == [[], [20]]
    assert not short.merges
    assert short.respond({"instances": [1, 2]}) == {"predictions": [10]}
    once = Batched(Routine(_Rows(lambda rows: sum(rows))), max_size=8, wait=0.0)
    assert once.respond({"instances": [1, 2]}) == {"predictions": 3}
    assert not once.merges
    assert once.predict([[1], [2, 3]], {}) == [1, 5]


class _Declares(_Rows):
    batchable = True


class _Refuses(_Rows):
    batchable = False


@pytest.mark.parametrize(
    "mode,predictor,batched",
    [
        ("false", _Declares(), False),
        ("true", _Declares(), True),
        ("true", _Rows(), False),
        ("all", _Rows(), True),
        ("all", _Refuses(), False),
    ],
)
def test_which_predictors_are_batched(mode, predictor, batched):
    wrapped = batching.wrap(Routine(predictor), mode=mode, max_size=8, wait=0.0)
    assert isinstance(wrapped, Batched) is batched


def test_vertex_predictors_take_whole_bodies_and_are_never_batched():
    routine = VertexRoutine(_Declares())
    assert batching.wrap(routine, mode="all", max_size=8, wait=0.0) is routine


# A real function process


@pytest.fixture(scope="module")
def kit(tmp_path_factory, iris_dir):
    tmp = tmp_path_factory.mktemp("kit")
    return str(iris_dir), str(make_tar(tmp / "kit-0.1.tar.gz", kit_files()))


@pytest.fixture
def batching_function(function, kit, tmp_path):
    """Starts a function serving kit.Batches with 32 threads; `.calls()` lists its calls."""
    origin, package = kit
    log = tmp_path / "batches.log"

    def start(**env: str):
        fn = function(
            {
                "CPR_ORIGIN": origin,
                "CPR_PACKAGE_URIS": package,
                "CPR_PREDICTION_CLASS": "kit.Batches",
                "CPR_CACHE_DIR": str(tmp_path / "cache"),
                "KIT_BATCHES": str(log),
                **env,
            },
            threads=32,
        )
        assert fn.predict({"instances": [0]}).status_code == 200  # loaded
        log.write_text("")
        fn.calls = lambda: [int(line.split()[0]) for line in log.read_text().splitlines()]
        fn.call_log = lambda: log.read_text().splitlines()
        return fn

    return start


def _concurrently(fn, bodies: list[dict]) -> list:
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(fn.predict, bodies))


def test_32_concurrent_requests_share_calls_and_each_gets_its_own_answer(batching_function):
    fn = batching_function(CPR_MICROBATCH="true", KIT_CALL_SECONDS="0.05")
    instances = [n if n % 2 else {"b64": base64.b64encode(b"x%d" % n).decode()} for n in range(32)]
    answers = _concurrently(fn, [{"instances": [i]} for i in instances])
    assert [a.status_code for a in answers] == [200] * 32
    for instance, answer in zip(instances, answers, strict=True):
        assert answer.json() == {"predictions": [{"instance": instance, "kwargs": {}}]}
    calls = fn.calls()
    assert sum(calls) == 32
    assert len(calls) < 32 and max(calls) > 1
    merged = fn.version_status()["microbatch"]
    assert merged["requests"] == 33 and merged["calls"] == len(calls) + 1


def test_requests_with_different_keyword_arguments_never_share_a_call(batching_function):
    fn = batching_function(CPR_MICROBATCH="true", KIT_CALL_SECONDS="0.05")
    kinds = [{}, {"tag": "a"}, {"tag": "b"}, {"scale": 1}, {"scale": 1.0}, {"scale": True}]
    bodies = [{"instances": [n], **kinds[n % len(kinds)]} for n in range(32)]
    answers = _concurrently(fn, bodies)
    for body, answer in zip(bodies, answers, strict=True):
        kwargs = {k: v for k, v in body.items() if k != "instances"}
        (prediction,) = answer.json()["predictions"]
        assert prediction["instance"] == body["instances"][0]
        assert json.dumps(prediction["kwargs"]) == json.dumps(kwargs)  # 1, 1.0, true apart
    assert len(fn.calls()) < 32


def test_a_failed_call_fails_only_the_requests_that_fail_alone(batching_function):
    fn = batching_function(CPR_MICROBATCH="true", KIT_CALL_SECONDS="0.05")
    bodies = [{"instances": [n], "fail": n % 2 == 0} for n in range(30)]
    bodies += [{"instances": ["bad"], "fail": False}, {"instances": [99], "fail": False}]
    answers = _concurrently(fn, bodies)
    for body, answer in zip(bodies, answers, strict=True):
        if body["fail"] or body["instances"] == ["bad"]:
            assert answer.status_code == 500
            assert answer.json() == {
                "error": "prediction failed: ValueError: cannot predict 1 instances"
            }
        else:
            assert answer.status_code == 200
            assert answer.json()["predictions"][0]["instance"] == body["instances"][0]
    merged_failures = [c for c in fn.call_log() if "('fail', True)" in c and c.split()[0] != "1"]
    assert merged_failures, fn.call_log()  # merged, failed, and each request predicted alone


def test_a_lone_request_does_not_wait_for_others(batching_function):
    fn = batching_function(
        CPR_MICROBATCH="true", CPR_MICROBATCH_WAIT_MS="1000", KIT_CALL_SECONDS="0.01"
    )
    latencies = []
    for n in range(5):
        start = time.monotonic()
        assert fn.predict({"instances": [n]}).status_code == 200
        latencies.append(time.monotonic() - start)
    assert max(latencies) < 0.5, latencies
    # After concurrent load, at most the first lone request waits for company.
    assert all(a.status_code == 200 for a in _concurrently(fn, [{"instances": [1]}] * 32))
    latencies = []
    for n in range(5):
        start = time.monotonic()
        assert fn.predict({"instances": [n]}).status_code == 200
        latencies.append(time.monotonic() - start)
    assert max(latencies[1:]) < 0.5, latencies
    assert set(fn.calls()) != {1}  # the concurrent requests did share calls


@pytest.fixture
def isolated_batching(function, kit, tmp_path):
    """Starts a function whose two custom-code versions each run in a process of their own:
    kit.Batches (the default) and kit.Echo. `.calls()` lists kit.Batches' calls."""
    origin, package = kit
    log = tmp_path / "batches.log"

    def start(**env: str):
        versions = {
            name: {"origin": origin, "package_uris": [package], "prediction_class": f"kit.{cls}"}
            for name, cls in (("batches", "Batches"), ("echo", "Echo"))
        }
        models = {"models": {"kit": {"default_version": "batches", "versions": versions}}}
        (tmp_path / "models.json").write_text(json.dumps(models))
        fn = function(
            {
                "CPR_MODELS": str(tmp_path / "models.json"),
                "CPR_CACHE_DIR": str(tmp_path / "cache"),
                "CPR_MICROBATCH": "true",
                "KIT_BATCHES": str(log),
                **env,
            },
            threads=32,
        )
        assert fn.predict({"instances": [0]}).status_code == 200  # loaded
        assert fn.status()["isolation"] == "process"
        log.write_text("")
        fn.calls = lambda: [int(line.split()[0]) for line in log.read_text().splitlines()]
        return fn

    return start


def test_a_version_in_a_process_of_its_own_merges_requests_before_its_channel(
    isolated_batching,
):
    fn = isolated_batching(KIT_CALL_SECONDS="0.05")
    kinds = [{}, {"tag": "a"}, {"scale": 1}, {"scale": 1.0}]
    bodies = [{"instances": [n], **kinds[n % len(kinds)]} for n in range(31)]
    bodies.append({"instances": ["bad"]})
    answers = _concurrently(fn, bodies)
    for body, answer in zip(bodies[:-1], answers[:-1], strict=True):
        kwargs = {k: v for k, v in body.items() if k != "instances"}
        (prediction,) = answer.json()["predictions"]
        assert prediction["instance"] == body["instances"][0]
        assert json.dumps(prediction["kwargs"]) == json.dumps(kwargs)
    assert answers[-1].status_code == 500
    assert answers[-1].json() == {
        "error": "prediction failed: ValueError: cannot predict 1 instances"
    }
    calls = fn.calls()
    assert len(calls) < 32 and max(calls) > 1
    merged = fn.version_status("kit", "batches")["microbatch"]
    assert merged["requests"] == 32 and merged["calls"] < 32
    echo = fn.predict({"instances": [1]}, path="/v1/projects/p/models/kit/versions/echo:predict")
    assert echo.json() == {"predictions": [{"instance": 1, "kwargs": {}}]}
    assert "microbatch" not in fn.version_status("kit", "echo")  # Echo does not declare it


def test_a_merged_call_past_the_deadline_is_a_504_for_each_of_its_requests_once(
    isolated_batching,
):
    fn = isolated_batching(CPR_PREDICT_TIMEOUT="1")
    answers = _concurrently(fn, [{"instances": [n], "sleep": 30} for n in range(8)])
    assert [a.status_code for a in answers] == [504] * 8
    assert "ran past the 1 s deadline" in answers[0].json()["error"]
    # The first call holds the first request, the next those queued behind it: each
    # instance is predicted once, none again alone (a second more per request).
    calls = fn.calls()
    assert sum(calls) == 8 and len(calls) < 8, calls


def test_each_version_of_a_models_file_merges_as_its_own_fields_say(function, kit, tmp_path):
    origin, package = kit
    log = tmp_path / "batches.log"
    batches = {"origin": origin, "package_uris": [package], "prediction_class": "kit.Batches"}
    versions = {
        "merged": {**batches, "microbatch_max_size": 4, "microbatch_wait_ms": 5},
        "apart": {**batches, "microbatch": False},
    }
    models = {"models": {"kit": {"default_version": "merged", "versions": versions}}}
    (tmp_path / "models.json").write_text(json.dumps(models))
    fn = function(
        {
            "CPR_MODELS": str(tmp_path / "models.json"),
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
            "CPR_MICROBATCH": "true",  # the deployment's: 1024 instances, 2 ms
            "KIT_BATCHES": str(log),
            "KIT_CALL_SECONDS": "0.05",
        },
        threads=32,
    )
    path = "/v1/projects/p/models/kit/versions/{}:predict"
    for version in versions:
        assert fn.predict({"instances": [0]}, path=path.format(version)).status_code == 200
    log.write_text("")

    def load(version: str) -> list[int]:
        bodies = [{"instances": [n], "tag": version} for n in range(16)]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda b: fn.predict(b, path=path.format(version)), bodies))
        for body, answer in zip(bodies, answers, strict=True):
            assert answer.json()["predictions"][0]["instance"] == body["instances"][0]
        lines = log.read_text().splitlines()
        return [int(line.split()[0]) for line in lines if f"'{version}'" in line]

    assert fn.status()["isolation"] == "process"  # merged before each version's channel
    merged = load("merged")
    assert sum(merged) == 16 and max(merged) <= 4 and len(merged) < 16, merged
    status = fn.version_status("kit", "merged")
    assert (status["microbatchMode"], status["microbatchMaxSize"]) == ("true", 4)
    assert (status["microbatch"]["maxSize"], status["microbatch"]["waitMs"]) == (4, 5.0)
    assert status["microbatch"]["largestCall"] <= 4
    assert load("apart") == [1] * 16
    apart = fn.version_status("kit", "apart")
    assert "microbatch" not in apart and apart["microbatchMode"] == "false"


def test_a_version_served_in_process_merges_when_its_own_field_says_so(function, kit, tmp_path):
    origin, package = kit
    version = {"origin": origin, "package_uris": [package], "prediction_class": "kit.Batches"}
    version.update(microbatch=True, microbatch_max_size=8, microbatch_wait_ms=3)
    models = {"models": {"kit": {"versions": {"v1": version}}}}
    (tmp_path / "models.json").write_text(json.dumps(models))
    fn = function(
        {
            "CPR_MODELS": str(tmp_path / "models.json"),
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
            "KIT_BATCHES": str(tmp_path / "batches.log"),
            "KIT_CALL_SECONDS": "0.05",
        },
        threads=32,
    )
    answers = _concurrently(fn, [{"instances": [n]} for n in range(16)])
    assert [a.json()["predictions"][0]["instance"] for a in answers] == list(range(16))
    assert fn.status()["isolation"] == "none"
    merged = fn.version_status()["microbatch"]  # the deployment sets nothing: 1024, 2 ms
    assert merged["requests"] == 16 and merged["calls"] < 16, merged
    assert (merged["maxSize"], merged["waitMs"]) == (8, 3.0) and merged["largestCall"] <= 8


def test_a_scikit_learn_model_merges_100_instance_requests_with_nothing_set(function, tmp_path):
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    features, labels = load_iris(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(features, labels)
    (tmp_path / "forest").mkdir()
    joblib.dump(forest, tmp_path / "forest" / "model.joblib")
    env = {"CPR_ORIGIN": str(tmp_path / "forest"), "CPR_FRAMEWORK": "scikit-learn"}
    fn = function({**env, "CPR_CACHE_DIR": str(tmp_path / "cache")}, threads=16)
    bodies = [{"instances": features[n : n + 100].tolist()} for n in range(0, 48, 3)]
    answers = _concurrently(fn, bodies)
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.json() == {"predictions": forest.predict(body["instances"]).tolist()}
    merged = fn.version_status()["microbatch"]
    assert merged["maxSize"] == 1024 and merged["requests"] == 16
    assert merged["calls"] < 16 and merged["largestCall"] > 100, merged
