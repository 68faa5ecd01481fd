"""Vertex AI predictors (load, preprocess, predict, postprocess) served by the function."""

from __future__ import annotations

import pytest
from conftest import IRIS, iris_expected, make_tar, upload_dir, upload_file

SOURCE = '''
import os

import joblib
import numpy as np
from fastapi import HTTPException
from google.cloud.aiplatform.prediction.predictor import Predictor
from google.cloud.aiplatform.utils import prediction_utils


class IrisPredictor(Predictor):
    """Written for Vertex AI's custom prediction routines."""

    def load(self, artifacts_uri):
        self._model = joblib.load(os.path.join(artifacts_uri, "model.joblib"))
        self._uri = artifacts_uri

    def preprocess(self, prediction_input):
        if "instances" not in prediction_input:
            raise HTTPException(status_code=400, detail="send instances, please")
        self._parameters = prediction_input.get("parameters", {})
        return np.asarray(prediction_input["instances"])

    def predict(self, instances):
        return self._model.predict(instances)

    def postprocess(self, prediction_results):
        names = ["setosa", "versicolor", "virginica"]
        labels = [names[int(i)] for i in prediction_results]
        if self._parameters.get("names_only"):
            return {"predictions": labels}
        return {"predictions": prediction_results, "labels": labels}


class Minimal:
    """No base class, no preprocess or postprocess: the body in, predict's result out."""

    def load(self, artifacts_uri):
        self._files = sorted(os.listdir(artifacts_uri))

    def predict(self, instances):
        return {"body": instances, "files": self._files}


class Failing(Minimal):
    def predict(self, instances):
        raise RuntimeError("the GPU is on fire")
'''


@pytest.fixture
def routine(bucket, iris_dir, tmp_path):
    package = make_tar(
        tmp_path / "vertex_iris-1.0.tar.gz",
        {
            "vertex_iris-1.0/setup.py": "from setuptools import setup\n"
            "setup(name='vertex_iris', version='1.0', py_modules=['vertex_iris'])\n",
            "vertex_iris-1.0/PKG-INFO": "Metadata-Version: 1.0\nName: vertex_iris\n",
            "vertex_iris-1.0/vertex_iris.py": SOURCE,
        },
    )
    return upload_dir(bucket, iris_dir, "iris"), upload_file(bucket, package, "vertex_iris.tar.gz")


def _serve(function, routine, cls: str):
    origin, package = routine
    return function(
        {
            "CPR_ORIGIN": origin,
            "CPR_PACKAGE_URIS": package,
            "CPR_PREDICTION_CLASS": f"vertex_iris.{cls}",
        }
    )


def test_a_vertex_predictor_gets_the_whole_body_and_answers_with_postprocess(
    function, routine, iris_dir
):
    fn = _serve(function, routine, "IrisPredictor")
    expected = iris_expected(iris_dir, IRIS, centered=False)
    names = ["setosa", "versicolor", "virginica"]

    answer = fn.predict({"instances": IRIS})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": expected, "labels": [names[i] for i in expected]}

    vertex = "/v1/projects/p/locations/l/endpoints/default:predict"
    answer = fn.predict({"instances": IRIS, "parameters": {"names_only": True}}, path=vertex)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == [names[i] for i in expected]
    assert body["deployedModelId"] and "labels" not in body


def test_an_http_exception_from_preprocess_keeps_its_status(function, routine):
    fn = _serve(function, routine, "IrisPredictor")
    answer = fn.predict({"rows": IRIS})
    assert answer.status_code == 400
    assert answer.json() == {"error": "the predictor refused the request: send instances, please"}
    assert fn.predict({"instances": IRIS}).status_code == 200


def test_preprocess_and_postprocess_are_optional(function, routine):
    fn = _serve(function, routine, "Minimal")
    answer = fn.predict({"anything": [1, 2], "at": "all"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "body": {"anything": [1, 2], "at": "all"},
        "files": ["model.joblib", "preprocessor.pkl"],
    }


def test_a_failing_vertex_predictor_is_a_500_and_the_process_keeps_serving(function, routine):
    fn = _serve(function, routine, "Failing")
    for _ in range(2):
        answer = fn.predict({"instances": [1]})
        assert answer.status_code == 500
        assert answer.json() == {"error": "prediction failed: RuntimeError: the GPU is on fire"}
    assert fn.status()["models"][0]["versions"][0]["loaded"] is True
