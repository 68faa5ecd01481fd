"""MLflow models with no custom code: every input format, the signature enforced, OpenAPI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
from conftest import FunctionProcess, assert_schemathesis_finds_nothing, upload_dir

pytest.importorskip("mlflow")

# Built in a child process: MLflow warns at import (warnings are errors here), and a
# PythonModel defined in __main__ is pickled by value, so the function can load it.
BUILD = r"""
import json, sys
from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

root = Path(sys.argv[1])
features, labels = load_iris(return_X_y=True, as_frame=True)
features.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
features["batch"] = np.arange(len(features), dtype="int64") % 3
model = LogisticRegression(max_iter=2000).fit(features, labels)
signature = infer_signature(features, model.predict(features))
mlflow.sklearn.save_model(model, root / "columns", signature=signature, input_example=features[:2])
mlflow.sklearn.save_model(model, root / "nosig")


class Scaled(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        scale = (params or {}).get("scale", 1.0)
        return np.asarray(model_input, dtype="float32").sum(axis=1) * scale


tensors = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 4))]),
    outputs=Schema([TensorSpec(np.dtype("float32"), (-1,))]),
    params=ParamSchema([ParamSpec("scale", "double", 1.0)]),
)
mlflow.pyfunc.save_model(root / "tensors", python_model=Scaled(), signature=tensors)

rows = features.iloc[[0, 60, 120]]
loaded = mlflow.pyfunc.load_model(str(root / "tensors"))
square = rows.iloc[:, :4].to_numpy(dtype="float32")
expected = {
    "rows": rows.to_dict(orient="records"),
    "columns": mlflow.pyfunc.load_model(str(root / "columns")).predict(rows).tolist(),
    "tensors": loaded.predict(square, params={"scale": 2.0}).tolist(),
}
(root / "expected.json").write_text(json.dumps(expected))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    subprocess.run([sys.executable, "-c", BUILD, str(root)], check=True, capture_output=True)
    return root, json.loads((root / "expected.json").read_text())


@pytest.fixture(scope="module")
def served(built, module_bucket, tmp_path_factory):
    """One function serving the MLflow models from the storage emulator, as versions of `iris`."""
    root, _ = built
    versions = {
        name: {"origin": upload_dir(module_bucket, root / name, name)}
        for name in ("columns", "nosig", "tensors")
    }
    models = {"models": {"iris": {"default_version": "columns", "versions": versions}}}
    tmp = tmp_path_factory.mktemp("served")
    (tmp / "models.json").write_text(json.dumps(models))
    env = {"CPR_MODELS": str(tmp / "models.json"), "CPR_CACHE_DIR": str(tmp / "cache")}
    fn = FunctionProcess(env, tmp / "function.log").start()
    yield fn
    fn.stop()


def _on(version: str) -> str:
    return f"/v1/projects/p/models/iris/versions/{version}:predict"


def _split(rows: list[dict]) -> dict:
    columns = list(rows[0])
    return {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}


@pytest.mark.parametrize(
    "make_body",
    [
        lambda rows: {"dataframe_split": _split(rows)},
        lambda rows: {"dataframe_records": rows},
        lambda rows: {"instances": rows},
        lambda rows: {"inputs": {c: [r[c] for r in rows] for c in rows[0]}},
    ],
    ids=["dataframe_split", "dataframe_records", "instances", "inputs"],
)
def test_every_input_format_predicts_as_mlflow_does(served, built, make_body):
    _, expected = built
    answer = served.predict(make_body(expected["rows"]), path="/predict")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": expected["columns"]}


def _with(rows: list[dict], **changes) -> list[dict]:
    return [{**rows[0], **changes}, *rows[1:]]


@pytest.mark.parametrize(
    "body,words",
    [
        (
            lambda rows: {
                "dataframe_records": [
                    {k: v for k, v in r.items() if k != "petal_width"} for r in rows
                ]
            },
            ["row 0 has no column 'petal_width'", "requires (double)"],
        ),
        (
            lambda rows: {"dataframe_split": _split(_with(rows, sepal_length="long"))},
            ["column 'sepal_length' is double", "row 0 holds string 'long'"],
        ),
        (
            lambda rows: {"instances": _with(rows, batch=2.5)},
            ["column 'batch' is long", "row 0 holds number '2.5'"],
        ),
        (
            lambda rows: {
                "inputs": {c: [r[c] for r in _with(rows, sepal_width=True)] for c in rows[0]}
            },
            ["column 'sepal_width' is double", "holds boolean 'True'"],
        ),
        (
            lambda rows: {"dataframe_split": {"columns": ["sepal_length"], "data": [[1.0, 2.0]]}},
            ["rows must be lists of 1 values"],
        ),
        (lambda rows: {"rows": rows}, ["exactly one of the fields", "fields received: rows"]),
        (
            lambda rows: {"instances": rows, "inputs": rows},
            ["exactly one of the fields", "fields received: inputs, instances"],
        ),
        (lambda rows: {"instances": rows, "k": 1}, ["also received: k"]),
        (lambda rows: {"instances": rows, "params": [1]}, ['"params" must be a JSON object']),
    ],
    ids=[
        "missing",
        "string",
        "float-in-long",
        "bool",
        "ragged",
        "no-format",
        "two-formats",
        "extra",
        "params",
    ],
)
def test_a_body_breaking_the_signature_is_a_400_naming_the_fault(served, built, body, words):
    _, expected = built
    answer = served.predict(body(expected["rows"]), path="/predict")
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    for word in words:
        assert word in message
    again = served.predict({"dataframe_records": expected["rows"]}, path="/predict")
    assert again.json() == {"predictions": expected["columns"]}


def test_a_tensor_signature_checks_dtype_and_shape_and_takes_params(served, built):
    _, expected = built
    square = [[r[c] for c in list(r)[:4]] for r in expected["rows"]]
    answer = served.predict({"inputs": square, "params": {"scale": 2.0}}, path=_on("tensors"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == pytest.approx(expected["tensors"])

    short = served.predict({"instances": [row[:3] for row in square]}, path=_on("tensors"))
    assert short.status_code == 400
    assert short.json()["error"]["message"] == (
        "instances: the input has shape [3, 3]; the model's signature says dtype float32, "
        "shape [-1, 4]"
    )
    words = served.predict({"inputs": [["a", "b", "c", "d"]]}, path=_on("tensors"))
    assert words.status_code == 400
    assert "holds string values" in words.json()["error"]["message"]
    for params, message in [
        (
            {"scale": "big"},
            "params: 'scale' is double in the model's signature (default 1.0); "
            "received string 'big'",
        ),
        ({"scael": 2}, "params: the model takes no parameter 'scael'; it takes scale"),
    ]:
        wrong = served.predict({"inputs": square, "params": params}, path=_on("tensors"))
        assert wrong.status_code == 400
        assert wrong.json()["error"]["message"] == message


def test_the_vertex_route_passes_parameters_as_params(served, built):
    _, expected = built
    square = [[r[c] for c in list(r)[:4]] for r in expected["rows"]]
    path = "/v1/projects/p/locations/l/endpoints/iris:predict"
    answer = served.predict({"instances": expected["rows"]}, path=path)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == expected["columns"]
    assert answer.json()["deployedModelId"]
    # The endpoint serves the default version (columns); tensors are reached by version.
    scaled = served.predict({"inputs": square, "params": {"scale": 2.0}}, path=_on("tensors"))
    assert scaled.json()["predictions"] == pytest.approx(expected["tensors"])


def test_a_model_without_a_signature_still_predicts(served, built):
    _, expected = built
    answer = served.predict({"dataframe_split": _split(expected["rows"])}, path=_on("nosig"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": expected["columns"]}


def _openapi(served, path: str) -> dict:
    answer = requests.get(served.url + path, timeout=60)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    from openapi_spec_validator import validate

    validate(document)
    return document


def test_the_openapi_document_follows_the_signature(served):
    document = _openapi(served, "/openapi.json")
    assert set(document["paths"]) == {"/predict", "/"}
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    records = next(f for f in body["schema"]["oneOf"] if "dataframe_records" in f["required"])
    row = records["properties"]["dataframe_records"]["items"]
    assert row["properties"]["batch"] == {"type": "integer"}
    assert row["properties"]["sepal_length"] == {"type": "number"}
    assert set(row["required"]) == {
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
        "batch",
    }


def test_each_version_has_its_document(served):
    tensors = _openapi(served, "/v1/projects/p/models/iris/versions/tensors/openapi.json")
    assert list(tensors["paths"]) == ["/v1/projects/p/models/iris/versions/tensors:predict"]
    schema = tensors["paths"][_on("tensors")]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    instances = next(f for f in schema["oneOf"] if "instances" in f["required"])
    assert instances["properties"]["instances"]["items"] == {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 4,
        "maxItems": 4,
    }
    assert instances["properties"]["params"]["properties"] == {"scale": {"type": "number"}}
    model = _openapi(served, "/fn/v1/projects/p/models/iris/openapi.json")
    assert model["servers"] == [{"url": "/fn"}]
    assert list(model["paths"]) == ["/v1/projects/p/models/iris:predict", _on("columns")]
    generic = _openapi(served, "/v1/projects/p/models/iris/versions/nosig/openapi.json")
    assert generic["paths"][_on("nosig")]["post"]["responses"]["400"]


@pytest.mark.parametrize(
    "path", ["/openapi.json", "/v1/projects/p/models/iris/versions/tensors/openapi.json"]
)
def test_schemathesis_finds_nothing_against_the_document(served, path, tmp_path):
    assert_schemathesis_finds_nothing(served.url + path, served.url, tmp_path)
