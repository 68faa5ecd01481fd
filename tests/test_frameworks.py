"""scikit-learn and XGBoost models with no custom code, and finding the framework of a directory."""

from __future__ import annotations

import json
import pickle

import joblib
import numpy as np
import pytest
import requests
from conftest import IRIS, FunctionProcess, upload_dir

xgboost = pytest.importorskip("xgboost")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny real models, one directory per version, saved the ways AI Platform accepted."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    root = tmp_path_factory.mktemp("frameworks")
    classifier = LogisticRegression(max_iter=2000).fit(features, labels)
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 2},
        xgboost.DMatrix(features, label=labels),
        num_boost_round=5,
    )
    regressor = xgboost.XGBRegressor(n_estimators=5, max_depth=2).fit(features, labels)
    dirs = {name: root / name for name in ("joblib", "pkl", "bst", "xgb_sklearn", "nothing")}
    for path in dirs.values():
        path.mkdir()
    joblib.dump(classifier, dirs["joblib"] / "model.joblib")
    (dirs["pkl"] / "model.pkl").write_bytes(pickle.dumps(classifier))
    # Saved as UBJSON and named as AI Platform named Boosters; XGBoost reads either format.
    booster.save_model(str(dirs["bst"] / "model.ubj"))
    (dirs["bst"] / "model.ubj").rename(dirs["bst"] / "model.bst")
    joblib.dump(regressor, dirs["xgb_sklearn"] / "model.joblib")
    (dirs["nothing"] / "weights.h5").write_bytes(b"\0" * 8)
    (dirs["nothing"] / "assets").mkdir()
    (dirs["nothing"] / "assets" / "vocab.txt").write_text("a\nb\n")
    expected = {
        "joblib": classifier.predict(np.asarray(IRIS)).tolist(),
        "proba": classifier.predict_proba(np.asarray(IRIS)).tolist(),
        "bst": booster.predict(xgboost.DMatrix(np.asarray(IRIS))).tolist(),
        "xgb_sklearn": regressor.predict(np.asarray(IRIS)).tolist(),
    }
    return dirs, expected


@pytest.fixture(scope="module")
def served(trained, module_bucket, tmp_path_factory):
    dirs, _ = trained
    versions = {
        name: {"origin": upload_dir(module_bucket, path, name)} for name, path in dirs.items()
    }
    versions["pkl"]["framework"] = "scikit-learn"
    versions["xgb_sklearn"]["framework"] = "xgboost"
    versions["wrong"] = {"origin": versions["bst"]["origin"], "framework": "tensorflow"}
    tmp = tmp_path_factory.mktemp("served")
    models = {"models": {"m": {"default_version": "joblib", "versions": versions}}}
    (tmp / "models.json").write_text(json.dumps(models))
    env = {"CPR_MODELS": str(tmp / "models.json"), "CPR_CACHE_DIR": str(tmp / "cache")}
    fn = FunctionProcess(env, tmp / "function.log").start()
    yield fn
    fn.stop()


def _on(version: str) -> str:
    return f"/v1/projects/p/models/m/versions/{version}:predict"


@pytest.mark.parametrize(
    "version,body,key",
    [
        ("joblib", {"instances": IRIS}, "joblib"),
        ("pkl", {"instances": IRIS}, "joblib"),
        ("joblib", {"instances": IRIS, "probabilities": True}, "proba"),
        ("bst", {"instances": IRIS}, "bst"),
        ("xgb_sklearn", {"instances": IRIS}, "xgb_sklearn"),
    ],
    ids=[
        "sklearn-joblib-detected",
        "sklearn-pkl",
        "probabilities",
        "xgboost-bst",
        "xgboost-sklearn",
    ],
)
def test_predictions_equal_the_framework_s_own(served, trained, version, body, key):
    _, expected = trained
    answer = served.predict(body, path=_on(version))
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], expected[key], rtol=1e-6)


@pytest.mark.parametrize(
    "version,body,message",
    [
        (
            "joblib",
            {"instances": [[1.0, 2.0]]},
            "the model takes rows of 4 features; received instances of shape [1, 2]",
        ),
        (
            "bst",
            {"instances": [[1.0, 2.0, 3.0]]},
            "the model takes rows of 4 features; received instances of shape [1, 3]",
        ),
        ("joblib", {"instances": [[1.0, 2.0, 3.0, 4.0], [1.0]]}, "must form a rectangular array"),
        (
            "xgb_sklearn",
            {"instances": IRIS, "probabilities": True},
            "probabilities=true needs a classifier with predict_proba; XGBRegressor has none",
        ),
    ],
    ids=["narrow-rows", "narrow-rows-booster", "ragged", "probabilities-on-regressor"],
)
def test_input_that_does_not_fit_the_model_is_a_400(served, version, body, message):
    answer = served.predict(body, path=_on(version))
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]
    assert served.predict({"instances": IRIS}, path=_on(version)).status_code == 200


def test_a_directory_with_no_model_file_lists_what_it_found_and_what_each_framework_wants(
    served,
):
    answer = served.predict({"instances": IRIS}, path=_on("nothing"))
    assert answer.status_code == 500
    assert answer.json()["error"]["message"] == (
        "no model file found to serve without CPR_PREDICTION_CLASS; files found in the model "
        "directory: assets/, weights.h5; expected per framework: scikit-learn: model.joblib or "
        "model.pkl; xgboost: model.bst or model.joblib or model.pkl; tensorflow: "
        "saved_model.pb; mlflow: MLmodel"
    )


def test_a_configured_framework_whose_file_is_missing_says_which_file(served):
    answer = served.predict({"instances": IRIS}, path=_on("wrong"))
    assert answer.status_code == 500
    assert answer.json()["error"]["message"] == (
        "framework tensorflow expects saved_model.pb in the model directory; files found: model.bst"
    )


def test_the_openapi_document_of_a_framework_model_describes_instances(served):
    from openapi_spec_validator import validate

    document = requests.get(served.url + "/openapi.json", timeout=60).json()
    validate(document)
    schema = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["schema"]["required"] == ["instances"]
