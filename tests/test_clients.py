"""Google's own client libraries, unchanged but for `api_endpoint`, against a real function."""

from __future__ import annotations

import pytest
import requests
from conftest import ml_v1
from google.auth.credentials import AnonymousCredentials
from routine_source import expected, models_file, routine_versions, without_pid

PROJECT, LOCATION = "my-project", "us-central1"
MODEL = f"projects/{PROJECT}/models/routine"
ENDPOINT = f"projects/{PROJECT}/locations/{LOCATION}/endpoints/routine"


@pytest.fixture(scope="module")
def served(releases, tmp_path_factory):
    """One function for the module: model `routine`, versions v1 and v2 (the default)."""
    from conftest import FunctionProcess

    tmp = tmp_path_factory.mktemp("clients")
    models = {
        "routine": {
            "description": "two releases",
            "default_version": "v2",
            "versions": routine_versions(releases),
        }
    }
    env = {"CPR_MODELS": models_file(tmp, models), "CPR_CACHE_DIR": str(tmp / "cache")}
    fn = FunctionProcess(env, tmp / "function.log").start()
    yield fn
    fn.stop()


@pytest.fixture
def ml(served):
    client = ml_v1(served.url)
    yield client
    client.close()


def test_ml_v1_predict_on_a_model_and_on_a_version(ml, served):
    projects = ml.projects()
    body = {"instances": [[1, 2], [3, 4]], "signature": "x"}
    by_version = projects.predict(name=f"{MODEL}/versions/v1", body=body).execute()
    assert without_pid(by_version["predictions"]) == expected(
        "v1", body["instances"], {"signature": "x"}
    )
    by_model = projects.predict(name=MODEL, body={"instances": [[5]]}).execute()
    assert without_pid(by_model["predictions"]) == expected("v2", [[5]])


def test_ml_v1_model_metadata_as_the_blog_reads_it(ml, served):
    models = ml.projects().models()
    model = models.get(name=MODEL).execute()
    assert model["name"] == MODEL and model["description"] == "two releases"
    default = model["defaultVersion"]
    assert default["name"] == f"{MODEL}/versions/v2"
    assert default["isDefault"] is True and default["state"] == "READY"
    assert default["predictionClass"] == "predictor.Predictor"
    assert default["deploymentUri"] == routine_versions_origin(served, "v2")
    assert default["packageUris"][0].endswith("routine-v2.tar.gz")

    listed = models.versions().list(parent=MODEL).execute()["versions"]
    assert [(v["name"].rsplit("/", 1)[1], v["isDefault"]) for v in listed] == [
        ("v1", False),
        ("v2", True),
    ]
    one = models.versions().get(name=f"{MODEL}/versions/v1").execute()
    assert one == listed[0]
    all_models = models.list(parent=f"projects/{PROJECT}").execute()["models"]
    assert [m["name"] for m in all_models] == [MODEL]


def routine_versions_origin(served, version: str) -> str:
    status = served.status()
    model = next(m for m in status["models"] if m["name"] == "routine")
    return next(v["origin"] for v in model["versions"] if v["name"] == version)


def test_ml_v1_errors_arrive_as_http_errors_with_our_message(ml):
    from googleapiclient.errors import HttpError

    with pytest.raises(HttpError) as error:
        ml.projects().predict(name=f"{MODEL}/versions/v7", body={"instances": [1]}).execute()
    assert error.value.resp.status == 404
    assert (
        "model 'routine' has no version 'v7'; its versions: v1, v2" in error.value.content.decode()
    )
    with pytest.raises(HttpError) as error:
        ml.projects().predict(name=MODEL, body={"instance": [1]}).execute()
    assert error.value.resp.status == 400
    assert 'request body has no \\"instances\\" field' in error.value.content.decode()


def test_aiplatform_endpoint_predict_with_parameters(served):
    from google.cloud import aiplatform

    aiplatform.init(
        project=PROJECT,
        location=LOCATION,
        api_endpoint=served.url,
        api_transport="rest",
        credentials=AnonymousCredentials(),
    )
    endpoint = aiplatform.Endpoint(ENDPOINT)
    assert endpoint.display_name == "routine"
    prediction = endpoint.predict(instances=[[1, 2]], parameters={"threshold": 0.5})
    # The gapic client sends instances as protobuf Values: integers arrive as floats.
    assert without_pid(prediction.predictions) == expected("v2", [[1.0, 2.0]], {"threshold": 0.5})
    assert prediction.deployed_model_id == "v2"
    assert (
        prediction.model_resource_name == f"projects/{PROJECT}/locations/{LOCATION}/models/routine"
    )


def test_aiplatform_v1_prediction_service_client(served):
    from google.api_core import exceptions
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format

    client = aiplatform_v1.PredictionServiceClient(
        client_options={"api_endpoint": served.url},
        transport="rest",
        credentials=AnonymousCredentials(),
    )
    answer = client.predict(endpoint=ENDPOINT, instances=[[3]])
    predictions = [json_format.MessageToDict(p) for p in answer._pb.predictions]
    assert without_pid(predictions) == expected("v2", [[3.0]])
    assert answer.deployed_model_id == "v2"

    with pytest.raises(exceptions.NotFound) as error:
        client.predict(endpoint=ENDPOINT.replace("routine", "nope"), instances=[[3]])
    assert "no model named 'nope'" in str(error.value)


def test_raw_predict_takes_the_body_as_sent(served):
    # What aiplatform's Endpoint.raw_predict sends: the body itself, not a JSON-wrapped HttpBody.
    answer = requests.post(
        f"{served.url}/v1/{ENDPOINT}:rawPredict",
        data=b'{"instances": [[3]], "k": 1}',
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200
    assert without_pid(answer.json()["predictions"]) == expected("v2", [[3]], {"k": 1})


def test_vertex_bodies_are_checked(served):
    url = f"{served.url}/v1/{ENDPOINT}:predict"
    answer = requests.post(url, json={"instances": [[1]], "parameters": [1]}, timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "code": 400,
        "message": '"parameters" must be a JSON object of keyword arguments; received a JSON array',
        "status": "INVALID_ARGUMENT",
    }
    answer = requests.post(url, json={"instances": [[1]], "k": 1}, timeout=30)
    assert answer.status_code == 400
    assert "only instances and parameters; it also had: k" in answer.json()["error"]["message"]
