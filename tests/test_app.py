"""The HTTP contract, in process: functions-framework's app built from main.py."""

from __future__ import annotations

import base64
import os
import sys

import functions_framework
import pytest
from conftest import EXAMPLES, IRIS, REPO, iris_expected, make_tar, version_status
from kit_source import kit_files


@pytest.fixture
def client_for(monkeypatch, tmp_path):
    """Builds the real app from main.py with the given CPR_* settings."""

    def make(env: dict[str, str]):
        for key in [k for k in os.environ if k.startswith("CPR_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("CPR_CACHE_DIR", str(tmp_path / "cache"))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # The entry point builds its app once per process, at import: import it anew.
        monkeypatch.delitem(sys.modules, "cpr_function.function", raising=False)
        return functions_framework.create_app("predict", str(REPO / "main.py")).test_client()

    return make


@pytest.fixture
def kit(tmp_path, iris_dir, client_for):
    """A client serving one class of the test kit package over the iris model directory."""
    archive = make_tar(tmp_path / "kit-0.1.tar.gz", kit_files())

    def serve(cls: str, **env):
        settings = {
            "CPR_ORIGIN": str(iris_dir),
            "CPR_PACKAGE_URIS": str(archive),
            "CPR_PREDICTION_CLASS": f"kit.{cls}",
        }
        return client_for({**settings, **env})

    return serve


def test_serves_the_bundled_example_when_nothing_is_configured(client_for):
    client = client_for({})
    status = client.get("/").get_json()
    assert status["config"]["example"] is True
    assert version_status(status)["loaded"] is False, "nothing may load before the first request"
    answer = client.post("/", json={"instances": IRIS})
    assert answer.status_code == 200
    assert answer.get_json() == {"predictions": iris_expected(EXAMPLES / "model", IRIS)}
    assert version_status(client.get("/").get_json())["loaded"] is True


def test_predict_route_and_numpy_output(kit, iris_dir):
    client = kit("Counting")
    for path in ("/predict", "/my-function/predict", "/predict/"):
        answer = client.post(path, json={"instances": IRIS})
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["predictions"] == iris_expected(iris_dir, IRIS, centered=False)


def test_other_fields_become_keyword_arguments_and_b64_round_trips(kit):
    client = kit("Echo")
    payload = {"instances": [{"image": {"b64": base64.b64encode(b"\x00\xffpng").decode()}}, 3]}
    answer = client.post("/", json={**payload, "signature": "serving", "top_k": 2})
    assert answer.status_code == 200
    assert answer.get_json()["predictions"] == [
        {
            "instance": {"image": {"b64": "AP9wbmc="}},
            "kwargs": {"signature": "serving", "top_k": 2},
        },
        {"instance": 3, "kwargs": {"signature": "serving", "top_k": 2}},
    ]


@pytest.mark.parametrize("key", ["b64", "\\u0062\\u0036\\u0034", "b\\u00364"])
def test_b64_leaves_reach_the_predictor_as_bytes(kit, key):
    # The key as JSON may spell it: escaped, it is still the key AI Platform decoded.
    encoded = base64.b64encode(b"\x00\xffpng").decode()
    body = f'{{"instances": [{{"{key}": "{encoded}"}}, "text"]}}'
    answer = kit("Reprs").post("/", data=body, content_type="application/json")
    assert answer.get_json()["predictions"] == ["b'\\x00\\xffpng'", "'text'"]


def test_instances_without_b64_reach_the_predictor_as_sent(kit):
    rows = [[1.5, 2], {"b65": "aGk=", "x": [None, True]}, "b\u00e9", "b 64"]
    answer = kit("Reprs").post("/", json={"instances": rows})
    assert answer.get_json()["predictions"] == [repr(r) for r in rows]


def test_non_string_keys_are_encoded_as_strings(kit):
    answer = kit("ClassScores").post("/", json={"instances": [1]})
    assert answer.status_code == 200
    assert answer.get_json()["predictions"] == [{"0": 0.25, "1": 0.75}]


def test_pandas_output_and_nan_become_json(kit):
    answer = kit("Pandas").post("/", json={"instances": [[1], [2]]})
    assert answer.status_code == 200
    assert answer.get_json()["predictions"] == [{"x": 1.0, "nan": None}, {"x": 2.0, "nan": None}]


BAD_BODIES = [
    (b"", 400, "empty"),
    (b"not json", 400, "not valid JSON"),
    (b"\xff\xfe{}", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON array"),
    (b'{"inputs": [1]}', 400, 'no "instances" field; fields received: inputs'),
    (b'{"instances": {"a": 1}}', 400, '"instances" must be a list; received a JSON object'),
    (b'{"instances": "abc"}', 400, "received a JSON string"),
    (b'{"instances": []}', 400, "empty list"),
    (b'{"instances": [{"b64": "***"}]}', 400, "not valid base64"),
    (b'{"instances": [{"b64": 5}]}', 400, "must be a base64 string"),
    (b'{"instances": [1], "self": 0}', 400, 'may not name "self"'),
    (b"[" * 5000 + b"]" * 5000, 400, "not valid JSON"),
]


@pytest.mark.parametrize("body,status,message", BAD_BODIES, ids=lambda v: str(v)[:30])
def test_bad_bodies_are_refused_with_what_was_expected(kit, body, status, message):
    client = kit("Echo")
    answer = client.post("/", data=body, content_type="application/json")
    assert answer.status_code == status
    assert message in answer.get_json()["error"]
    assert "Traceback" not in answer.get_data(as_text=True)
    assert client.post("/", json={"instances": [1]}).status_code == 200, "must keep serving"


def test_body_over_the_limit_is_413(kit):
    client = kit("Echo", CPR_MAX_REQUEST_BYTES="1KB")
    answer = client.post("/", json={"instances": ["x" * 2000]})
    assert answer.status_code == 413
    assert "at most 1000 bytes" in answer.get_json()["error"]
    assert client.post("/", json={"instances": ["x" * 100]}).status_code == 200


@pytest.mark.parametrize(
    "cls,message",
    [
        ("Raising", "prediction failed: ValueError: instance 0 has the wrong shape"),
        ("Unencodable", "cannot be encoded as JSON"),
        (
            "Exits",
            "prediction failed: SystemExit: the code called sys.exit(3). To fix: do not exit",
        ),
    ],
)
def test_predictor_failures_are_500_and_serving_goes_on(kit, cls, message):
    client = kit(cls)
    answer = client.post("/", json={"instances": [1]})
    assert answer.status_code == 500
    assert message in answer.get_json()["error"]
    assert "Traceback" not in answer.get_data(as_text=True)
    assert client.get("/").status_code == 200


@pytest.mark.parametrize(
    "cls,message",
    [
        ("Missing", "module 'kit' has no attribute 'Missing'; classes it defines: "),
        (
            "NoPredict",
            "must define from_path(model_dir) and predict(instances, **kwargs) as AI Platform's "
            "predictors do, or load(artifacts_uri) and predict(instances) as Vertex AI's do; "
            "it lacks predict",
        ),
        ("BrokenLoad", "kit.BrokenLoad.from_path failed: OSError: artifact weights.bin is missing"),
        (
            "ExitsOnLoad",
            "kit.ExitsOnLoad.from_path failed: SystemExit: the code called sys.exit(2)",
        ),
    ],
)
def test_load_failures_name_the_problem(kit, cls, message):
    client = kit(cls)
    answer = client.post("/", json={"instances": [1]})
    assert answer.status_code == 500
    assert message in answer.get_json()["error"]
    assert version_status(client.get("/").get_json())["lastError"] == answer.get_json()["error"]


def test_garbage_collection_pauses_while_a_version_loads_and_only_then(kit):
    # Paused: loading is faster (bench/coldstart.py). Only then: a process left without
    # its collector would grow without bound on cyclic garbage.
    import gc

    assert gc.isenabled()
    answer = kit("CollectorState").post("/", json={"instances": [1]})
    assert answer.get_json() == {"predictions": [{"at_load": False, "serving": True}]}
    assert gc.isenabled()
    assert kit("BrokenLoad").post("/", json={"instances": [1]}).status_code == 500
    assert gc.isenabled(), "a failed load must switch the collector back on too"


def test_wrong_module_lists_what_the_packages_provide(kit):
    client = kit("Echo", CPR_PREDICTION_CLASS="predictors.MyPredictor")
    answer = client.post("/", json={"instances": [1]})
    assert answer.status_code == 500
    assert answer.get_json()["error"] == (
        "prediction class predictors.MyPredictor: no module named 'predictors'; the packages "
        "provide the top-level modules: kit"
    )


def test_unknown_route_and_method(kit):
    client = kit("Echo")
    answer = client.post("/v2/whatever", json={"instances": [1]})
    assert answer.status_code == 404
    assert "no route for /v2/whatever" in answer.get_json()["error"]
    answer = client.delete("/")
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET, POST"
    assert client.get("/predict").status_code == 405
