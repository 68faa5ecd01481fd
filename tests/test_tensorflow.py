"""TensorFlow SavedModels served as TF Serving did: real tiny models, real function processes."""

from __future__ import annotations

import base64
import functools
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, FunctionProcess, upload_dir

tf = pytest.importorskip("tensorflow")

WEIGHTS = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [0.0, -1.0, 3.0], [2.0, 0.25, 1.0]]
BIAS = [0.1, -0.2, 0.3]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [0.0, 0.0, 0.0, 0.0]]
VERTEX = "/v1/projects/p/locations/l/endpoints/default:predict"
AI_PLATFORM = "/v1/projects/p/models/default:predict"


class Linear(tf.Module):
    """One float input `x` [None, 4] to one output `scores`; other signatures parse text, and
    sum the whole batch into one value."""

    def __init__(self):
        super().__init__()
        self.weights = tf.Variable(WEIGHTS)
        self.bias = tf.Variable(BIAS)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def scores(self, x):
        return {"scores": tf.matmul(x, self.weights) + self.bias}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def parse(self, text):
        return {"number": tf.strings.to_number(text)}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def total(self, x):
        return {"total": tf.reduce_sum(x)}


class Mixed(tf.Module):
    """Two inputs (float `a` [None, 2], string `s` [None]) to four outputs, one of them bytes."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="a"),
            tf.TensorSpec([None], tf.string, name="s"),
        ]
    )
    def serve(self, a, s):
        return {
            "sum": tf.reduce_sum(a, axis=1),
            "length": tf.strings.length(s),
            "upper": tf.strings.upper(s),
            "echo_bytes": s,
        }


def save(module: tf.Module, directory, **signatures) -> None:
    tf.saved_model.save(module, str(directory), signatures=signatures)


@functools.cache
def _loaded(model_dir: str):
    return tf.saved_model.load(model_dir)


def computed(model_dir, signature: str = "serving_default", **inputs) -> dict:
    """What the SavedModel computes on `inputs`, called directly."""
    function = _loaded(str(model_dir)).signatures[signature]
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    return {k: v.numpy() for k, v in function(**tensors).items()}


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def message(answer) -> str:
    """An error response's message, in either error shape."""
    error = answer.json()["error"]
    return error["message"] if isinstance(error, dict) else error


@pytest.fixture(scope="module")
def linear_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("linear") / "model"
    module = Linear()
    save(module, directory, serving_default=module.scores, parse=module.parse, total=module.total)
    return directory


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mixed") / "model"
    module = Mixed()
    save(module, directory, serving_default=module.serve)
    return directory


@pytest.fixture(scope="module")
def linear(module_bucket, linear_dir, tmp_path_factory):
    """A function serving the linear model from a Cloud Storage bucket, framework named."""
    origin = upload_dir(module_bucket, linear_dir, "models/linear")
    work = tmp_path_factory.mktemp("linear-function")
    env = {"CPR_ORIGIN": origin, "CPR_FRAMEWORK": "tensorflow", "CPR_CACHE_DIR": str(work / "c")}
    for function in _serve(env, work):
        assert function.version_status()["loaded"] is False, "nothing may load before a request"
        yield function


@pytest.fixture(scope="module")
def mixed(mixed_dir, tmp_path_factory):
    """A function serving the two-input model from a local directory, framework detected."""
    work = tmp_path_factory.mktemp("mixed-function")
    yield from _serve({"CPR_ORIGIN": str(mixed_dir), "CPR_CACHE_DIR": str(work / "c")}, work)


def _serve(env: dict[str, str], work):
    proc = FunctionProcess(env, work / "function.log")
    try:
        yield proc.start()
    finally:
        proc.stop()


def test_importing_the_adapter_does_not_import_tensorflow():
    code = (
        "import sys, cpr_function.frameworks.savedmodel; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_rows_answer_one_prediction_per_instance(linear, linear_dir):
    answer = linear.predict({"instances": ROWS})
    assert answer.status_code == 200, answer.text
    expected = computed(linear_dir, x=np.float32(ROWS))["scores"]
    np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=1e-6)
    assert linear.version_status()["loaded"] is True


def test_instances_may_name_the_single_input(linear, linear_dir):
    answer = linear.predict({"instances": [{"x": row} for row in ROWS]})
    assert answer.status_code == 200, answer.text
    expected = computed(linear_dir, x=np.float32(ROWS))["scores"]
    np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=1e-6)


@pytest.mark.parametrize("inputs", [ROWS, {"x": ROWS}], ids=["plain", "named"])
def test_columnar_inputs_answer_outputs(linear, linear_dir, inputs):
    answer = linear.predict({"inputs": inputs})
    assert answer.status_code == 200, answer.text
    assert list(answer.json()) == ["outputs"]
    expected = computed(linear_dir, x=np.float32(ROWS))["scores"]
    np.testing.assert_allclose(answer.json()["outputs"], expected, rtol=1e-6)


def test_signature_name_picks_another_signature(linear):
    body = {"signature_name": "parse", "instances": ["1.5", "-2", "1e3"]}
    answer = linear.predict(body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [1.5, -2.0, 1000.0]}


@pytest.mark.parametrize("path", [AI_PLATFORM, VERTEX, "/predict"])
def test_the_ai_platform_and_vertex_routes(linear, linear_dir, path):
    # Vertex AI bodies may carry parameters; a signature takes none, so they are ignored.
    extra = {"parameters": {"top_k": 3}} if path == VERTEX else {}
    answer = linear.predict({"instances": ROWS[:2], **extra}, path=path)
    assert answer.status_code == 200, answer.text
    expected = computed(linear_dir, x=np.float32(ROWS[:2]))["scores"]
    np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=1e-6)


def test_two_inputs_and_outputs_with_b64_strings(mixed, mixed_dir):
    assert mixed.version_status()["framework"] is None, "the framework must be detected"
    raw = b"\xff\x00ab"
    instances = [{"a": [1.5, 2.0], "s": b64(raw)}, {"a": [-1.0, 0.25], "s": "héllo"}]
    answer = mixed.predict({"instances": instances})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    expected = computed(mixed_dir, a=np.float32([[1.5, 2.0], [-1.0, 0.25]]), s=[raw, "héllo"])
    assert [p["sum"] for p in predictions] == pytest.approx(expected["sum"].tolist())
    assert [p["length"] for p in predictions] == expected["length"].tolist() == [4, 6]
    # Outputs named *_bytes come back as b64; other strings as text when they are UTF-8.
    assert [p["echo_bytes"] for p in predictions] == [b64(raw), b64("héllo".encode())]
    assert predictions[1]["upper"] == expected["upper"][1].decode() == "HéLLO"
    assert predictions[0]["upper"] == b64(expected["upper"][0])


def test_two_inputs_columnar(mixed, mixed_dir):
    inputs = {"a": [[1.0, 2.0], [3.0, 4.0]], "s": ["x", "yz"]}
    answer = mixed.predict({"inputs": inputs}, path=AI_PLATFORM)
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    expected = computed(mixed_dir, a=np.float32(inputs["a"]), s=inputs["s"])
    assert sorted(outputs) == ["echo_bytes", "length", "sum", "upper"]
    np.testing.assert_allclose(outputs["sum"], expected["sum"])
    assert outputs["length"] == [1, 2] and outputs["upper"] == ["X", "YZ"]


def test_an_output_without_a_row_per_instance_answers_only_columns(linear):
    answer = linear.predict({"signature_name": "total", "inputs": ROWS})
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"] == pytest.approx(float(np.float32(ROWS).sum()))
    answer = linear.predict({"signature_name": "total", "instances": ROWS})
    assert answer.status_code == 400
    assert "output 'total'" in message(answer)
    assert 'does not split into one row per instance for 3 instances; send {"inputs"' in (
        message(answer)
    )


def test_a_savedmodel_without_signatures_fails_to_load(tmp_path):
    from cpr_function import frameworks
    from cpr_function.errors import LoadError

    tf.saved_model.save(tf.Module(), str(tmp_path))
    with pytest.raises(LoadError, match="no signatures to serve; export it with"):
        frameworks.load(tmp_path, None)


class Gate(tf.Module):
    """An int32 input `n` kept where the bool input `flag` is true."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int32, name="n"),
            tf.TensorSpec([None], tf.bool, name="flag"),
        ]
    )
    def serve(self, n, flag):
        return {"kept": tf.where(flag, n, tf.zeros_like(n))}


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    from cpr_function.frameworks import savedmodel

    directory = tmp_path_factory.mktemp("gate")
    module = Gate()
    save(module, directory, serving_default=module.serve)
    return savedmodel.load(directory / "saved_model.pb")


def test_integer_and_boolean_inputs(gate):
    answer = gate.respond({"instances": [{"n": 7, "flag": True}, {"n": 5, "flag": False}]})
    assert answer["predictions"].tolist() == [7, 0]


@pytest.mark.parametrize(
    "inputs,words",
    [
        ({"n": [1, 2**40], "flag": [True, True]}, "integers outside the int32 range"),
        ({"n": [1, 2.5], "flag": [True, True]}, "received numbers of shape [2]"),
        ({"n": [1, True], "flag": [True, True]}, "numbers mixed with booleans"),
        ({"n": [1, 2], "flag": [1, 0]}, "input 'flag' takes bool of shape [-1]; received integers"),
    ],
)
def test_integer_and_boolean_inputs_take_only_their_json_values(gate, inputs, words):
    from cpr_function.errors import BadRequest

    with pytest.raises(BadRequest) as raised:
        gate.respond({"inputs": inputs})
    assert words in str(raised.value)


BAD = {
    "wrong dtype": (
        "linear",
        "/",
        {"instances": [["a", "b", "c", "d"]]},
        ["input 'x'", "float32", "[-1, 4]", "received strings"],
    ),
    "wrong shape": (
        "linear",
        "/",
        {"instances": [[1, 2, 3]]},
        [
            "input 'x'",
            "float32",
            "[-1, 4]",
            "each instance of shape [4]",
            "integers of shape [1, 3]",
        ],
    ),
    "booleans among numbers": (
        "linear",
        "/",
        {"instances": [[True, 1.5, 2, 3]]},
        ["input 'x'", "float32", "received numbers mixed with booleans of shape [1, 4]"],
    ),
    "wrong columnar shape": (
        "linear",
        "/",
        {"inputs": [1, 2, 3, 4]},
        ["input 'x'", "[-1, 4]", "received integers of shape [4]"],
    ),
    "ragged instances": (
        "linear",
        "/",
        {"instances": [[1, 2, 3, 4], [1, 2]]},
        ["input 'x'", "[-1, 4]", "unequal lengths"],
    ),
    "unknown signature": (
        "linear",
        "/",
        {"signature_name": "nope", "instances": ROWS},
        ["no signature named 'nope'", "parse, serving_default, total"],
    ),
    "both formats": (
        "linear",
        "/",
        {"instances": ROWS, "inputs": ROWS},
        ['"instances"', '"inputs"', "not both"],
    ),
    "neither format": (
        "linear",
        "/",
        {"examples": ROWS},
        ['neither "instances" nor "inputs"', "fields received: examples"],
    ),
    "empty instances": ("linear", "/", {"instances": []}, ["empty list"]),
    "vertex signature name": (
        "linear",
        VERTEX,
        {"instances": ROWS, "signature_name": "parse"},
        ["only instances and parameters", "signature_name"],
    ),
    "vertex without instances": (
        "linear",
        VERTEX,
        {"parameters": {}},
        ['needs "instances"'],
    ),
    "refused by the model": (
        "linear",
        AI_PLATFORM,
        {"signature_name": "parse", "instances": ["12", "twelve"]},
        ["signature 'parse' refused the inputs: StringToNumberOp", "string: twelve"],
    ),
    "missing input name": (
        "mixed",
        "/",
        {"instances": [{"a": [1, 2]}]},
        ["instance 0 lacks s", "a (float32 of shape [-1, 2]", "s (string of shape [-1]"],
    ),
    "unknown input name": (
        "mixed",
        "/",
        {"instances": [{"a": [1, 2], "s": "x", "t": 1}]},
        ["instance 0 has unknown t"],
    ),
    "plain instances for two inputs": (
        "mixed",
        "/",
        {"instances": [[1, 2]]},
        ["each instance must be an object keyed by those names", "JSON array"],
    ),
    "missing columnar input": (
        "mixed",
        "/",
        {"inputs": {"a": [[1, 2]]}},
        ['"inputs" lacks s'],
    ),
    "number for a string": (
        "mixed",
        "/",
        {"instances": [{"a": [1, 2], "s": 5}]},
        ["input 's'", "string", "JSON number"],
    ),
    "bad b64": ("mixed", "/", {"instances": [{"a": [1, 2], "s": {"b64": "***"}}]}, ["base64"]),
}
GOOD = {"linear": {"instances": ROWS}, "mixed": {"instances": [{"a": [1, 2], "s": "x"}]}}


@pytest.mark.parametrize("server,path,body,words", BAD.values(), ids=BAD.keys())
def test_bodies_that_do_not_fit_are_refused_with_what_was_expected(
    request, server, path, body, words
):
    function = request.getfixturevalue(server)
    answer = function.predict(body, path=path)
    assert answer.status_code == 400, answer.text
    for word in words:
        assert word in message(answer)
    assert function.predict(GOOD[server]).status_code == 200, "must keep serving"


def test_schemas_describe_the_bodies_that_are_served(request, linear_dir, mixed_dir):
    from jsonschema import Draft202012Validator

    from cpr_function.frameworks import savedmodel

    cases = {
        "linear": (
            linear_dir,
            [
                {"inputs": {"x": ROWS}},
                {"signature_name": "parse", "instances": ["1.5"]},
                {"signature_name": "total", "inputs": ROWS},
            ],
            [
                {"instances": [[1, 2, 3]]},
                {"inputs": []},
                {"signature_name": "nope", "instances": ROWS},
                {"signature_name": "total", "instances": ROWS},
                {"signature_name": "parse", "instances": [1]},
            ],
        ),
        "mixed": (
            mixed_dir,
            [
                {"instances": [{"a": [1, 2], "s": b64(b"\xff")}]},
                {"inputs": {"a": [[1, 2]], "s": ["x"]}},
            ],
            [{"instances": [{"a": [1, 2]}]}, {"instances": [[1, 2]], "inputs": [[1, 2]]}],
        ),
    }
    for server, (model_dir, good, bad) in cases.items():
        function = request.getfixturevalue(server)
        schemas = savedmodel.load(model_dir / "saved_model.pb").schemas()
        for schema in schemas.values():
            Draft202012Validator.check_schema(schema)
        requests, responses = (Draft202012Validator(schemas[k]) for k in ("request", "response"))
        for body in [GOOD[server], *good]:
            assert requests.is_valid(body), body
            answer = function.predict(body)
            assert answer.status_code == 200, answer.text
            responses.validate(answer.json())
        for body in bad:
            assert not requests.is_valid(body), body
