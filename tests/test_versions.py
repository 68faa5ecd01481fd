"""Models by version in one function: isolation between versions, LRU unloading, failures."""

from __future__ import annotations

import concurrent.futures

import pytest
from conftest import IRIS, iris_expected, make_tar, upload_dir, upload_file
from routine_source import expected, models_file, routine_versions, without_pid


@pytest.fixture
def twins(function, tmp_path, releases, iris_dir):
    """A function serving model `routine` (v1, v2; v2 the default) and model `iris`."""
    models = {
        "routine": {"default_version": "v2", "versions": routine_versions(releases)},
        "iris": {"versions": {"v1": {"origin": str(iris_dir), "framework": "scikit-learn"}}},
    }
    env = {"CPR_MODELS": models_file(tmp_path, models), "CPR_CACHE_DIR": str(tmp_path / "c")}
    return function(env, threads=8)


def test_versions_with_same_named_modules_each_see_their_own_code(twins):
    rows = [[1, 2], [3, 4]]
    base = "/v1/projects/my-project/models/routine"

    def call(version: str):
        path = f"{base}/versions/{version}:predict"
        answer = twins.predict({"instances": rows, "k": version}, path=path)
        assert answer.status_code == 200, answer.text
        return version, answer.json()["predictions"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, ["v1", "v2"] * 20))
    for version, predictions in answers:
        assert without_pid(predictions) == expected(version, rows, {"k": version})
    pids = {v: {p["pid"] for _, ps in answers if _ == v for p in ps} for v in ("v1", "v2")}
    assert len(pids["v1"]) == len(pids["v2"]) == 1 and pids["v1"] != pids["v2"]

    default = twins.predict({"instances": rows}, path=f"{base}:predict").json()
    assert without_pid(default["predictions"]) == expected("v2", rows)


def test_the_default_model_serves_the_plain_routes(function, tmp_path, releases, iris_dir):
    models = {
        "iris": {"versions": {"v1": {"origin": str(iris_dir), "framework": "scikit-learn"}}},
        "routine": {"default_version": "v1", "versions": routine_versions(releases)},
    }
    env = {"CPR_MODELS": models_file(tmp_path, models, default_model="routine")}
    fn = function({**env, "CPR_CACHE_DIR": str(tmp_path / "c")})
    for path in ("/", "/predict"):
        answer = fn.predict({"instances": [[1, 2]]}, path=path)
        assert without_pid(answer.json()["predictions"]) == expected("v1", [[1, 2]])
    iris = fn.predict({"instances": IRIS}, path="/v1/projects/p/models/iris:predict")
    assert iris.json() == {"predictions": iris_expected(iris_dir, IRIS, centered=False)}


def test_status_lists_models_versions_and_what_is_loaded(twins):
    status = twins.status()
    assert status["isolation"] == "process"
    assert status["defaultModel"] == "routine"
    routine = next(m for m in status["models"] if m["name"] == "routine")
    assert routine["defaultVersion"] == "v2"
    assert [(v["name"], v["loaded"]) for v in routine["versions"]] == [
        ("v1", False),
        ("v2", False),
    ]
    twins.predict({"instances": [[1]]}, path="/v1/projects/p/models/routine/versions/v1:predict")
    v1 = twins.version_status("routine", "v1")
    assert v1["loaded"] is True and v1["memoryBytes"] > 0 and v1["pid"] > 0
    assert set(v1["coldStartSeconds"]) >= {"download", "unpack", "import", "from_path", "total"}
    assert twins.version_status("routine", "v2")["loaded"] is False


@pytest.mark.parametrize(
    "method,path,status,message",
    [
        ("POST", "/v1/projects/p/models/nope:predict", 404, "no model named 'nope'; the models"),
        (
            "POST",
            "/v1/projects/p/models/routine/versions/v9:predict",
            404,
            "model 'routine' has no version 'v9'; its versions: v1, v2",
        ),
        ("GET", "/v1/projects/p/models/routine/versions/v9", 404, "has no version 'v9'"),
        ("GET", "/v1/projects/p/locations/l/endpoints/nope", 404, "no model named 'nope'"),
        ("GET", "/v1/projects/p/models/routine:predict", 405, "GET is not allowed"),
        ("DELETE", "/v1/projects/p/models/routine", 405, "DELETE is not allowed"),
        ("POST", "/v1/projects/p/models/routine:explain", 404, "no route for"),
    ],
)
def test_unknown_models_versions_and_methods(twins, method, path, status, message):
    import requests

    answer = requests.request(method, twins.url + path, json={"instances": [1]}, timeout=30)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert message in error["message"] and error["code"] == status


def test_a_version_that_fails_to_load_leaves_the_others_serving(
    function, tmp_path, releases, bucket
):
    versions = routine_versions(releases)
    versions["broken"] = {**versions["v1"], "origin": f"gs://{bucket.name}/missing"}
    models = {"routine": {"default_version": "v1", "versions": versions}}
    fn = function(
        {"CPR_MODELS": models_file(tmp_path, models), "CPR_CACHE_DIR": str(tmp_path / "c")}
    )
    base = "/v1/projects/p/models/routine/versions"
    broken = fn.predict({"instances": [[1]]}, path=f"{base}/broken:predict")
    assert broken.status_code == 500
    assert (
        broken.json()["error"]["message"]
        == f"model directory gs://{bucket.name}/missing holds no objects"
    )
    for version in ("v1", "v2"):
        answer = fn.predict({"instances": [[1]]}, path=f"{base}/{version}:predict")
        assert without_pid(answer.json()["predictions"]) == expected(version, [[1]])
    import requests

    described = requests.get(f"{fn.url}{base}/broken", timeout=30).json()
    assert described["state"] == "FAILED"
    assert described["errorMessage"] == broken.json()["error"]["message"]


def test_least_recently_used_versions_are_unloaded_within_the_budget(function, tmp_path, releases):
    models = {"routine": {"default_version": "v1", "versions": routine_versions(releases)}}
    fn = function(
        {
            "CPR_MODELS": models_file(tmp_path, models),
            "CPR_CACHE_DIR": str(tmp_path / "c"),
            "CPR_MEMORY_BUDGET": "1B",  # below any process: only the last used stays loaded
        }
    )
    base = "/v1/projects/p/models/routine/versions"

    def pid(version: str) -> int:
        answer = fn.predict({"instances": [[1]]}, path=f"{base}/{version}:predict")
        return answer.json()["predictions"][0]["pid"]

    first = pid("v1")
    assert pid("v1") == first, "a loaded version is reused"
    pid("v2")
    assert fn.version_status("routine", "v1")["loaded"] is False
    assert fn.version_status("routine", "v2")["loaded"] is True
    assert pid("v1") != first, "an unloaded version loads again in a new process"
    assert "unloading routine/v1, least recently used" in fn.log()


def test_a_budget_that_fits_keeps_every_version(function, tmp_path, releases):
    models = {"routine": {"default_version": "v1", "versions": routine_versions(releases)}}
    fn = function(
        {
            "CPR_MODELS": models_file(tmp_path, models),
            "CPR_CACHE_DIR": str(tmp_path / "c"),
            "CPR_MEMORY_BUDGET": "64GiB",
        }
    )
    for version in ("v1", "v2", "v1"):
        fn.predict(
            {"instances": [[1]]}, path=f"/v1/projects/p/models/routine/versions/{version}:predict"
        )
    assert [fn.version_status("routine", v)["loaded"] for v in ("v1", "v2")] == [True, True]
    assert fn.status()["loadedMemoryBytes"] > 0


def test_without_isolation_clashing_module_names_are_refused(function, tmp_path, releases):
    models = {"routine": {"default_version": "v1", "versions": routine_versions(releases)}}
    fn = function(
        {
            "CPR_MODELS": models_file(tmp_path, models),
            "CPR_CACHE_DIR": str(tmp_path / "c"),
            "CPR_ISOLATION": "none",
        }
    )
    base = "/v1/projects/p/models/routine/versions"
    first = fn.predict({"instances": [[1]]}, path=f"{base}/v1:predict")
    assert without_pid(first.json()["predictions"]) == expected("v1", [[1]])
    second = fn.predict({"instances": [[1]]}, path=f"{base}/v2:predict")
    assert second.status_code == 500
    assert "model routine version v2 ships the module" in second.json()["error"]["message"]
    assert "use CPR_ISOLATION=process or auto" in second.json()["error"]["message"]
    again = fn.predict({"instances": [[1]]}, path=f"{base}/v1:predict")
    assert without_pid(again.json()["predictions"]) == expected("v1", [[1]])


def test_a_crashed_version_process_answers_500_and_restarts(function, tmp_path, releases):
    crash = tmp_path / "crash"
    crash.mkdir()
    (crash / "crash.py").write_text(
        "import os\n\n\nclass Predictor:\n    @classmethod\n    def from_path(cls, d):\n"
        "        return cls()\n\n    def predict(self, instances, **kw):\n"
        "        if kw.get('die'):\n            os._exit(3)\n"
        "        return [os.getpid() for _ in instances]\n"
    )
    archive = make_tar(
        tmp_path / "crash-1.tar.gz", {"crash-1/crash.py": (crash / "crash.py").read_text()}
    )
    versions = routine_versions(releases, ("v1",))
    versions["crashy"] = {
        "origin": str(releases["v1"][0]),
        "package_uris": [str(archive)],
        "prediction_class": "crash.Predictor",
    }
    models = {"routine": {"default_version": "v1", "versions": versions}}
    fn = function(
        {"CPR_MODELS": models_file(tmp_path, models), "CPR_CACHE_DIR": str(tmp_path / "c")}
    )
    path = "/v1/projects/p/models/routine/versions/crashy:predict"
    before = fn.predict({"instances": [1]}, path=path).json()["predictions"][0]
    died = fn.predict({"instances": [1], "die": True}, path=path)
    assert died.status_code == 500
    assert died.json()["error"]["message"] == (
        "model routine version crashy: its worker process ended (exit status 3) while "
        "predicting; the next request starts it again"
    )
    after = fn.predict({"instances": [1]}, path=path).json()["predictions"][0]
    assert after != before
    v1 = fn.predict({"instances": [[1]]}, path="/v1/projects/p/models/routine/versions/v1:predict")
    assert without_pid(v1.json()["predictions"]) == expected("v1", [[1]])


def test_models_file_and_versions_from_cloud_storage(function, tmp_path, releases, bucket):
    versions = {}
    for name, (model_dir, archive) in releases.items():
        versions[name] = {
            "origin": upload_dir(bucket, model_dir, f"models/routine/{name}"),
            "packageUris": [upload_file(bucket, archive, f"staging/{archive.name}")],
            "predictionClass": "predictor.Predictor",
        }
    text = (
        "# the v1 field names are accepted too\n"
        "models:\n  routine:\n    defaultVersion: v1\n    versions:\n"
        + "".join(
            f"      {n}:\n        deploymentUri: {v['origin']}\n"
            f"        packageUris: [{v['packageUris'][0]}]\n"
            f"        predictionClass: {v['predictionClass']}\n"
            for n, v in versions.items()
        )
    )
    bucket.blob("config/models.yaml").upload_from_string(text)
    fn = function(
        {
            "CPR_MODELS": f"gs://{bucket.name}/config/models.yaml",
            "CPR_CACHE_DIR": str(tmp_path / "c"),
        }
    )
    for name in ("v1", "v2"):
        path = f"/v1/projects/p/models/routine/versions/{name}:predict"
        answer = fn.predict({"instances": [[2]]}, path=path)
        assert without_pid(answer.json()["predictions"]) == expected(name, [[2]])


def test_concurrent_first_requests_to_a_version_start_one_process(twins):
    path = "/v1/projects/p/models/routine/versions/v1:predict"
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(lambda _: twins.predict({"instances": [[1]]}, path=path), range(16))
        )
    assert [a.status_code for a in answers] == [200] * 16
    assert len({a.json()["predictions"][0]["pid"] for a in answers}) == 1
    assert twins.log().count("worker process") == 1
