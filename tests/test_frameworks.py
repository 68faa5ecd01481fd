"""scikit-learn and XGBoost models with no custom code, and finding the framework of a directory."""

from __future__ import annotations

import json
import pickle
import warnings

import joblib
import numpy as np
import pytest
import requests
from conftest import IRIS, FunctionProcess, assert_schemathesis_finds_nothing, upload_dir

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


@pytest.mark.parametrize("version", ["joblib", "bst", "xgb_sklearn"])
def test_numbers_sent_as_strings_are_answered_as_the_numbers(served, trained, version):
    """AI Platform's servers read "5.1" as 5.1; so does this, for a feature taking numbers."""
    as_numbers = served.predict({"instances": IRIS}, path=_on(version))
    as_strings = [[str(v) for v in row] for row in IRIS]
    answer = served.predict({"instances": as_strings}, path=_on(version))
    assert answer.status_code == 200, answer.text
    assert answer.json() == as_numbers.json()


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
        (
            "joblib",
            {"instances": [IRIS[0], [6.7, "wide", 5.2, 2.3]]},
            "feature 1 takes numbers; instance 1 holds a string, 'wide'",
        ),
        (
            "joblib",
            {"instances": [[6.7, 3.0, None, 2.3]]},
            "feature 2 has no value (null) in instance 0, and LogisticRegression takes no "
            "missing values",
        ),
        (
            "xgb_sklearn",
            {"instances": [["long", 3.5, 1.4, 0.2]]},
            "feature 0 takes numbers; instance 0 holds a string, 'long'",
        ),
        (
            "bst",
            {"instances": [IRIS[0], [6.7, 3.0, 5.2, -1e39]]},
            "feature 3 takes numbers of at most 3.4028234663852886e+38 in size (the model holds "
            "them as float32); instance 1 holds a number, -1e+39",
        ),
    ],
    ids=[
        "narrow-rows",
        "narrow-rows-booster",
        "ragged",
        "probabilities-on-regressor",
        "string-for-a-number",
        "null-where-no-missing-values",
        "string-for-a-number-xgboost",
        "past-float32-booster",
    ],
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
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["instances"]
    # The default version: a LogisticRegression fitted on an array of 4 features.
    assert body["schema"]["properties"]["instances"]["items"] == {
        "type": "array",
        "minItems": 4,
        "maxItems": 4,
        "items": {"type": "number"},
    }
    assert body["schema"]["properties"]["probabilities"]["type"] == "boolean"


# Models fitted on pandas DataFrames keep their column names.

FRAME_ROWS = [row + [color] for row, color in zip(IRIS, ["red", "blue", "blue"], strict=True)]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width", "color"]


@pytest.fixture(scope="module")
def named(module_bucket, tmp_path_factory):
    """A scikit-learn pipeline that picks its columns by name (numbers and a category) and an
    XGBoost Booster, both fitted on DataFrames, served from the emulator; their own answers."""
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features, labels = load_iris(return_X_y=True, as_frame=True)
    features.columns = FEATURES[:4]
    frame = features.assign(color=np.where(labels == 0, "red", "blue"))
    pipeline = make_pipeline(
        make_column_transformer((StandardScaler(), FEATURES[:4]), (OneHotEncoder(), ["color"])),
        LogisticRegression(max_iter=2000),
    ).fit(frame, labels)
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 2},
        xgboost.DMatrix(features, label=labels),
        num_boost_round=5,
    )
    leaf = LogisticRegression(max_iter=2000).fit(features, labels)
    # A colour the classes follow, so the classifier splits on it.
    colored = features.assign(color=np.array(["red", "blue", "green"])[labels])
    categorical = xgboost.XGBClassifier(n_estimators=5, max_depth=2, enable_categorical=True)
    categorical.fit(colored.astype({"color": "category"}), labels)
    root = tmp_path_factory.mktemp("named")
    for name in ("pipeline", "booster", "leaf", "categorical"):
        (root / name).mkdir()
    joblib.dump(pipeline, root / "pipeline" / "model.joblib")
    joblib.dump(leaf, root / "leaf" / "model.joblib")
    joblib.dump(categorical, root / "categorical" / "model.joblib")
    booster.save_model(str(root / "booster" / "model.ubj"))
    (root / "booster" / "model.ubj").rename(root / "booster" / "model.bst")
    versions = {
        n: {"origin": upload_dir(module_bucket, root / n, f"named-{n}")}
        for n in ("pipeline", "booster", "leaf", "categorical")
    }
    versions["categorical"]["framework"] = "xgboost"
    models = {"models": {"m": {"default_version": "pipeline", "versions": versions}}}
    (root / "models.json").write_text(json.dumps(models))
    env = {"CPR_MODELS": str(root / "models.json"), "CPR_CACHE_DIR": str(root / "cache")}
    fn = FunctionProcess(env, root / "function.log").start()
    sent = pd.DataFrame(FRAME_ROWS, columns=FEATURES)
    fn.expected = {
        "pipeline": pipeline.predict(sent).tolist(),
        "proba": pipeline.predict_proba(sent).tolist(),
        "booster": booster.predict(xgboost.DMatrix(sent[FEATURES[:4]])).tolist(),
        "leaf": leaf.predict_proba(sent[FEATURES[:4]]).tolist(),
        "categorical": categorical.predict_proba(sent.astype({"color": "category"})).tolist(),
        "categorical-blue": categorical.predict_proba(
            sent.assign(color="blue").astype({"color": "category"})
        ).tolist(),
        "categorical-missing": categorical.predict_proba(
            sent.assign(color=None).astype({"color": pd.CategoricalDtype(["blue", "red"])})
        ).tolist(),
    }
    yield fn
    fn.stop()


def test_a_pipeline_fitted_on_a_dataframe_answers_rows_and_named_objects_as_it_would(named):
    rows = {"instances": FRAME_ROWS}
    objects = {"instances": [dict(zip(FEATURES, r, strict=True)) for r in FRAME_ROWS]}
    objects["instances"][1] = dict(reversed(objects["instances"][1].items()))  # any key order
    for body in (rows, objects):
        answer = named.predict(body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == named.expected["pipeline"]
    answer = named.predict({**rows, "probabilities": True})
    np.testing.assert_allclose(answer.json()["predictions"], named.expected["proba"], rtol=1e-9)
    assert "feature names" not in named.log()  # no warning about unnamed input


def test_a_booster_trained_on_a_dataframe_answers_rows_and_named_objects_as_it_would(named):
    rows = [r[:4] for r in FRAME_ROWS]
    objects = [dict(zip(FEATURES[:4], r, strict=True)) for r in rows]
    for instances in (rows, objects):
        answer = named.predict({"instances": instances}, path=_on("booster"))
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(
            answer.json()["predictions"], named.expected["booster"], rtol=1e-6
        )
    assert "Unknown file format" not in named.log()  # XGBoost's guess from the name model.bst


@pytest.mark.parametrize(
    "version,instance,message",
    [
        (
            "pipeline",
            {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "colour": "red"},
            "instance 0 lacks petal_width, color and has colour, which the model does not "
            "take; the model's features: sepal_length, sepal_width, petal_length, petal_width, "
            "color",
        ),
        (
            "pipeline",
            [5.1, 3.5, 1.4, 0.2],
            "instance 0 must be a row of 5 values or an object keyed by the model's features "
            "(sepal_length, sepal_width, petal_length, petal_width, color); received a list of 4 "
            "values",
        ),
        (
            "pipeline",
            "red",
            "instance 0 must be a row of 5 values or an object keyed by the model's features "
            "(sepal_length, sepal_width, petal_length, petal_width, color); received a string, "
            "'red'",
        ),
        (
            "pipeline",
            [5.1, 3.5, 1.4, [0.2], "red"],
            "instance 0 holds a list of 1 value for feature 'petal_width'; each feature takes "
            "one value",
        ),
        (
            "booster",
            {"sepal_length": 5.1},
            "instance 0 lacks sepal_width, petal_length, petal_width; the model's features: "
            "sepal_length, sepal_width, petal_length, petal_width",
        ),
        (
            "leaf",
            {"sepal_length": 5.1, "sepal_width": "wide", "petal_length": 1.4, "petal_width": 0.2},
            "feature 'sepal_width' takes numbers; instance 0 holds a string, 'wide'",
        ),
        (
            "categorical",
            [5.1, 3.5, 1.4, 0.2, 0],
            "feature 'color' takes one of the model's categories ('blue', 'green', 'red'); "
            "instance 0 holds a number, 0",
        ),
        (
            "categorical",
            [5.1, 3.5, 1.4, 0.2, "purple"],
            "feature 'color' takes one of the model's categories ('blue', 'green', 'red'); "
            "instance 0 holds a string, 'purple'",
        ),
        (
            "categorical",
            [5.1, 3.5, "long", 0.2, "red"],
            "feature 'petal_length' takes numbers; instance 0 holds a string, 'long'",
        ),
    ],
    ids=[
        "missing-and-unknown",
        "short-row",
        "not-a-row",
        "nested",
        "booster-missing",
        "string-for-a-number",
        "code-for-a-category-by-name",
        "unknown-category",
        "string-for-a-number-beside-a-category",
    ],
)
def test_an_instance_that_does_not_fit_the_named_features_is_a_400(
    named, version, instance, message
):
    answer = named.predict({"instances": [instance]}, path=_on(version))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"] == message
    assert named.predict({"instances": FRAME_ROWS}).status_code == 200


def test_a_plain_estimator_fitted_on_a_dataframe_answers_as_it_would_and_warns_nothing(named):
    rows = [r[:4] for r in FRAME_ROWS]
    objects = [dict(zip(FEATURES[:4], r, strict=True)) for r in rows]
    for instances in (rows, objects):
        body = {"instances": instances, "probabilities": True}
        answer = named.predict(body, path=_on("leaf"))
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["predictions"], named.expected["leaf"], rtol=1e-9)
    assert "feature names" not in named.log()


def test_an_xgboost_classifier_with_a_categorical_feature_takes_its_categories_by_name(named):
    everything = named.expected["categorical"]
    objects = [dict(zip(FEATURES, r, strict=True)) for r in FRAME_ROWS]
    # "red" alone in a call is still "red", not the code of the first category sent.
    alone = FRAME_ROWS[:1]
    assert not np.allclose(everything[0], named.expected["categorical-blue"][0])
    for instances, expected in (
        (FRAME_ROWS, everything),
        (objects, everything),
        (alone, everything[:1]),
        ([r[:4] + [None] for r in FRAME_ROWS], named.expected["categorical-missing"]),
    ):
        body = {"instances": instances, "probabilities": True}
        answer = named.predict(body, path=_on("categorical"))
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=1e-6)


def _request_schema(function, version: str) -> dict:
    from openapi_spec_validator import validate

    url = f"{function.url}/v1/projects/p/models/m/versions/{version}/openapi.json"
    document = requests.get(url, timeout=60).json()
    validate(document)
    body = document["paths"][_on(version)]["post"]["requestBody"]["content"]["application/json"]
    return body["schema"]


def test_the_openapi_document_names_the_features_and_what_each_takes(named):
    leaf = _request_schema(named, "leaf")["properties"]["instances"]["items"]["anyOf"]
    assert leaf[0]["items"] == {"type": "number"}  # LogisticRegression takes no null
    assert leaf[1]["required"] == FEATURES[:4]
    assert leaf[1]["additionalProperties"] is False
    categorical = _request_schema(named, "categorical")["properties"]["instances"]["items"]
    row, by_name = categorical["anyOf"]
    assert row["prefixItems"][-1] == {"enum": ["blue", "green", "red", None]}  # trained order
    assert by_name["properties"]["sepal_length"] == {"type": ["number", "null"]}
    assert by_name["properties"]["color"] == {"enum": ["blue", "green", "red", None]}
    pipeline = _request_schema(named, "pipeline")["properties"]["instances"]["items"]["anyOf"]
    assert pipeline[1]["required"] == FEATURES  # a pipeline checks its own values
    assert pipeline[1]["properties"]["color"] == {"type": ["number", "string", "boolean", "null"]}
    booster = _request_schema(named, "booster")["properties"]["instances"]["items"]["anyOf"]
    assert "probabilities" not in _request_schema(named, "booster")["properties"]
    assert booster[1]["properties"]["petal_width"] == {
        "type": ["number", "null"],
        "minimum": -3.4028234663852886e38,  # a Booster holds its input as float32
        "maximum": 3.4028234663852886e38,
    }


@pytest.mark.parametrize("version", ["leaf", "categorical", "booster"])
def test_schemathesis_finds_nothing_against_a_framework_model_s_document(named, version, tmp_path):
    document = f"{named.url}/v1/projects/p/models/m/versions/{version}/openapi.json"
    # Every body the document allows is answered (200), none refused.
    assert_schemathesis_finds_nothing(
        document, named.url, tmp_path, also=("positive_data_acceptance",)
    )


BAD_INSTANCES = [
    [[None, 1, 2, 3]],
    [["a", 1, 2, 3]],
    [["1.5", 1, 2, 3]],
    [[1e39, 1, 2, 3]],
    [[-1.7e308, 1, 2, 3]],
    [[10**30, 1, 2, 3]],
    [[True, 1, 2, 3]],
    [[-1e39, None, "x", 1]],
    [[1, 2, 3, {}]],
    [[1, 2, 3, [4]]],
    [[1, 2, 3]],
    [1, 2, 3, 4],
    [[]],
    ["abcd"],
    [{"a": 1}],
]


def test_no_instance_makes_a_framework_model_fail_with_anything_but_a_400(tmp_path):
    """Each model gets each instance: an answer, or a 400 saying what is wrong; never the
    model's own error (a 500 to the caller)."""
    from sklearn.datasets import load_iris
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import (
        AdaBoostClassifier,
        BaggingClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        IsolationForest,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression

    from cpr_function.errors import BadRequest
    from cpr_function.frameworks import estimators

    frame, labels = load_iris(return_X_y=True, as_frame=True)
    fitted = {
        "logistic": (LogisticRegression(max_iter=500), frame.values),
        "logistic-named": (LogisticRegression(max_iter=500), frame),
        "forest": (RandomForestClassifier(n_estimators=3), frame.values),
        "adaboost": (AdaBoostClassifier(n_estimators=3), frame.values),
        "bagging": (BaggingClassifier(n_estimators=3), frame.values),
        "isolation": (IsolationForest(n_estimators=3), frame.values),
        "histogram-named": (HistGradientBoostingClassifier(max_iter=3), frame),
        "xgboost": (xgboost.XGBClassifier(n_estimators=2), frame.values),
        "xgboost-named": (xgboost.XGBClassifier(n_estimators=2), frame),
    }
    predictors = {}
    for name, (model, data) in fitted.items():
        joblib.dump(model.fit(data, labels), tmp_path / f"{name}.joblib")
        predictors[name] = estimators.load(tmp_path / f"{name}.joblib").predictor
    for name, data in (("booster", frame.values), ("booster-named", frame)):
        params = {"objective": "multi:softprob", "num_class": 3}
        booster = xgboost.train(params, xgboost.DMatrix(data, label=labels), num_boost_round=2)
        booster.save_model(str(tmp_path / f"{name}.ubj"))
        (tmp_path / f"{name}.ubj").rename(tmp_path / f"{name}.bst")
        predictors[name] = estimators.load(tmp_path / f"{name}.bst").predictor
    outcomes = {}
    for name, predictor in predictors.items():
        for instances in BAD_INSTANCES:
            try:
                with warnings.catch_warnings():  # the isolation forest's, casting 1e39
                    warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
                    predictor.predict(instances)
                outcome = "answered"
            except BadRequest:
                outcome = "400"
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                outcome = f"{type(exc).__name__}: {exc}"[:200]
            outcomes[name, repr(instances)] = outcome
    failed = {k: v for k, v in outcomes.items() if v not in ("answered", "400")}
    assert not failed
    # A few that must be refused, and a few that must be answered, whatever the model.
    for name in predictors:
        assert outcomes[name, repr([["1.5", 1, 2, 3]])] == "answered"
        assert outcomes[name, repr([["a", 1, 2, 3]])] == "400"
        assert outcomes[name, repr([[1, 2, 3]])] == "400"
        assert outcomes[name, repr([[True, 1, 2, 3]])] == "answered"
        assert outcomes[name, repr([[10**30, 1, 2, 3]])] == "answered"
    for name in ("forest", "adaboost", "bagging", "booster", "booster-named"):
        assert outcomes[name, repr([[1e39, 1, 2, 3]])] == "400"
    for name in ("xgboost", "isolation"):  # these answer such numbers themselves
        assert outcomes[name, repr([[1e39, 1, 2, 3]])] == "answered"
    assert outcomes["logistic", repr([[1e39, 1, 2, 3]])] == "answered"  # a float64 model
    assert outcomes["logistic", repr([[None, 1, 2, 3]])] == "400"
    assert outcomes["histogram-named", repr([[None, 1, 2, 3]])] == "answered"
    # Holding an estimator, it checks its own input, and is given its DataFrame as it was.
    held = GradientBoostingClassifier(n_estimators=3, init=DummyClassifier()).fit(frame, labels)
    joblib.dump(held, tmp_path / "held.joblib")
    answer = estimators.load(tmp_path / "held.joblib").predictor.predict([[5.1, 3.5, 1.4, 0.2]])
    assert answer.tolist() == held.predict(frame.iloc[:1]).tolist()


def test_a_null_is_a_missing_value_for_a_model_that_takes_them(tmp_path):
    from sklearn.datasets import load_iris
    from sklearn.ensemble import HistGradientBoostingClassifier

    from cpr_function.frameworks import estimators

    features, labels = load_iris(return_X_y=True)
    model = HistGradientBoostingClassifier(max_iter=5).fit(features, labels)
    joblib.dump(model, tmp_path / "model.joblib")
    predictor = estimators.load(tmp_path / "model.joblib").predictor
    answer = predictor.predict([[6.7, None, 5.2, 2.3]], probabilities=True)
    expected = model.predict_proba(np.asarray([[6.7, np.nan, 5.2, 2.3]]))
    np.testing.assert_allclose(answer, expected, rtol=1e-12)


def test_without_pandas_a_pipeline_fitted_on_a_dataframe_still_answers_numbers(tmp_path):
    import subprocess
    import sys

    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = load_iris(return_X_y=True, as_frame=True)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    joblib.dump(pipeline.fit(features, labels), tmp_path / "model.joblib")
    code = (
        "import sys, json\n"
        "class NoPandas:\n"  # import pandas fails from here on, as where it is not installed
        "    def find_spec(self, name, *args):\n"
        "        if name.split('.')[0] == 'pandas': raise ImportError('no pandas here')\n"
        "sys.meta_path.insert(0, NoPandas())\n"
        "from pathlib import Path\n"
        "from cpr_function.frameworks import estimators\n"
        f"routine = estimators.load(Path({str(tmp_path / 'model.joblib')!r}))\n"
        f"print(json.dumps(routine.predictor.predict({IRIS!r}).tolist()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    sent = pd.DataFrame(IRIS, columns=features.columns)
    assert json.loads(done.stdout) == pipeline.predict(sent).tolist()


def test_a_null_is_a_missing_value_alone_and_beside_other_requests_instances(tmp_path):
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from cpr_function.frameworks import estimators

    frame = pd.DataFrame(
        {"size": [0.1, 0.9, 0.4, 0.7, 0.2, 0.8], "color": ["red", "blue", None] * 2}
    )
    colors = make_pipeline(SimpleImputer(strategy="constant", fill_value="none"), OneHotEncoder())
    model = make_pipeline(
        make_column_transformer((colors, ["color"]), ("passthrough", ["size"])),
        LogisticRegression(),
    ).fit(frame, [0, 1, 1, 0, 0, 1])
    joblib.dump(model, tmp_path / "model.joblib")
    predictor = estimators.load(tmp_path / "model.joblib").predictor
    alone = predictor.predict([[0.3, None]], probabilities=True)[0]
    merged = predictor.predict([[0.3, None], [0.5, "red"]], probabilities=True)[0]
    nan = pd.DataFrame({"size": [0.3], "color": [float("nan")]}).astype({"color": object})
    np.testing.assert_allclose(alone, merged, rtol=1e-12)
    np.testing.assert_allclose(alone, model.predict_proba(nan)[0], rtol=1e-12)


def test_a_wrapped_pipeline_that_picks_columns_by_name_gets_its_columns(tmp_path):
    import pandas as pd
    from sklearn.compose import TransformedTargetRegressor, make_column_transformer
    from sklearn.datasets import load_iris
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cpr_function.frameworks import estimators

    features, labels = load_iris(return_X_y=True, as_frame=True)
    picks = make_column_transformer((StandardScaler(), ["petal length (cm)"]))
    model = TransformedTargetRegressor(
        regressor=make_pipeline(picks, Ridge()), func=np.log1p, inverse_func=np.expm1
    ).fit(features, labels)
    joblib.dump(model, tmp_path / "model.joblib")
    predictor = estimators.load(tmp_path / "model.joblib").predictor
    expected = model.predict(pd.DataFrame(IRIS, columns=features.columns))
    np.testing.assert_allclose(predictor.predict(IRIS), expected, rtol=1e-12)


def _categorical_booster(frame, labels, folder):
    """A small binary Booster trained on a DataFrame with category columns, and its
    predictor as served."""
    booster = xgboost.train(
        {"max_depth": 2, "objective": "binary:logistic"},
        xgboost.DMatrix(frame, label=labels, enable_categorical=True),
        num_boost_round=3,
    )
    return booster, _served_booster(booster, folder)


def _served_booster(booster, folder):
    """The Booster saved as AI Platform named it (model.bst, here UBJSON) and loaded back."""
    from cpr_function.frameworks import estimators

    booster.save_model(str(folder / "model.ubj"))
    (folder / "model.ubj").rename(folder / "model.bst")
    return estimators.load(folder / "model.bst").predictor


def test_a_booster_with_a_categorical_feature_takes_its_categories_by_value(tmp_path):
    import pandas as pd

    frame = pd.DataFrame(
        {"size": [0.1, 0.9, 0.4, 0.7, 0.3, 0.6], "color": ["red", "blue", "green"] * 2}
    ).astype({"color": "category"})
    booster = xgboost.train(
        {"max_depth": 2},
        xgboost.DMatrix(frame, label=[0, 1, 1, 0, 0, 1], enable_categorical=True),
        num_boost_round=3,
    )
    predictor = _served_booster(booster, tmp_path)
    expected = booster.predict(xgboost.DMatrix(frame.iloc[[2, 1]], enable_categorical=True))
    by_value = [[0.4, "green"], {"color": "blue", "size": 0.9}]
    by_code = [[0.4, 1], [0.9, 0]]  # the codes, in the categories' sorted order
    np.testing.assert_allclose(predictor.predict(by_value), expected, rtol=1e-6)
    np.testing.assert_allclose(predictor.predict(by_code), expected, rtol=1e-6)
    # A code means the same beside a null or a name elsewhere in the call (merged requests).
    mixed = predictor.predict([[0.4, 1], [None, "red"], [0.9, "blue"]])
    np.testing.assert_allclose(mixed[[0, 2]], expected, rtol=1e-6)
    with pytest.raises(Exception) as refused:
        predictor.predict([["big", "green"]])
    assert str(refused.value) == "feature 'size' takes numbers; instance 0 holds a string, 'big'"
    assert getattr(refused.value, "status_code", None) == 400
    for unknown, shown in (
        ("purple", "a string, 'purple'"),
        (3, "a number, 3"),
        (1.5, "a number, 1.5"),
    ):
        with pytest.raises(Exception) as refused:
            predictor.predict([[0.4, "green"], [0.4, unknown]])
        assert str(refused.value) == (
            "feature 'color' takes one of the model's categories ('blue', 'green', 'red') or their "
            f"codes, 0 to 2; instance 1 holds {shown}"
        )


def test_a_booster_with_number_categories_takes_them_by_value_never_as_codes(tmp_path):
    import pandas as pd

    grades = [10, 20, 30] * 10
    frame = pd.DataFrame({"size": [0.5] * 30, "grade": pd.Categorical(grades)})
    labels = [g == 20 for g in grades]
    booster, predictor = _categorical_booster(frame, labels, tmp_path)
    expected = booster.predict(xgboost.DMatrix(frame.iloc[[1, 0]], enable_categorical=True))
    assert expected[0] > 0.5 > expected[1]  # 20, then 10
    np.testing.assert_allclose(predictor.predict([[0.5, 20], [0.5, 10]]), expected, rtol=1e-6)
    alone = predictor.predict([[0.5, 20]])  # all numbers: still the category 20, not code 20
    np.testing.assert_allclose(alone, expected[:1], rtol=1e-6)
    with pytest.raises(Exception) as refused:
        predictor.predict([[0.5, 1]])
    assert str(refused.value) == (
        "feature 'grade' takes one of the model's categories (10, 20, 30); instance 0 holds a "
        "number, 1"
    )


def test_categories_that_are_numbers_or_read_as_numbers_are_never_taken_as_codes(tmp_path):
    """A column of int32 categories reaches an XGBClassifier as int32 (XGBoost maps only the
    type it was trained on); a Booster whose names read as numbers takes no codes, since a
    number sent could be either."""
    import pandas as pd

    from cpr_function.frameworks import estimators

    grades = np.array([3, 7, 9] * 10, dtype="int32")
    frame = pd.DataFrame({"size": [0.5] * 30, "grade": pd.Categorical(grades)})
    labels = [g == 7 for g in grades]
    classifier = xgboost.XGBClassifier(n_estimators=3, max_depth=2, enable_categorical=True)
    joblib.dump(classifier.fit(frame, labels), tmp_path / "model.joblib")
    predictor = estimators.load(tmp_path / "model.joblib").predictor
    answer = predictor.predict([[0.5, 7], [0.5, 3]], probabilities=True)
    np.testing.assert_allclose(answer, classifier.predict_proba(frame.iloc[[1, 0]]), rtol=1e-6)
    assert answer[0][1] > 0.5 > answer[1][1]

    named = frame.assign(grade=pd.Categorical([str(g) for g in grades]))  # "3", "7", "9"
    booster, predictor = _categorical_booster(named, labels, tmp_path)
    by_name = predictor.predict([[0.5, "7"], [0.5, "3"]])
    assert by_name[0] > 0.5 > by_name[1]
    with pytest.raises(Exception) as refused:
        predictor.predict([[0.5, 1]])
    assert str(refused.value) == (
        "feature 'grade' takes one of the model's categories ('3', '7', '9'); instance 0 holds "
        "a number, 1"
    )


def test_a_booster_with_names_of_one_feature_unreadable_takes_the_others_by_name(tmp_path):
    import pandas as pd

    frame = pd.DataFrame(
        {
            "size": [0.5] * 30,
            "color": pd.Categorical(["blue", "red"] * 15),
            "word": pd.Categorical(["é1", "é2", "日本"] * 10),
        }
    )
    labels = [i % 2 == 1 for i in range(30)]  # "red"
    booster, predictor = _categorical_booster(frame, labels, tmp_path)
    by_code = predictor.predict([[0.5, 1, 2], [0.5, 0, 2]])
    assert by_code[0] > 0.5 > by_code[1]
    by_name = predictor.predict([[0.5, "red", 2], {"size": 0.5, "color": "blue", "word": 2}])
    np.testing.assert_allclose(by_name, by_code, rtol=1e-6)
    with_null = predictor.predict([[0.5, "red", 2], [0.5, None, None]])
    np.testing.assert_allclose(with_null[:1], by_code[:1], rtol=1e-6)


def test_a_booster_that_keeps_no_category_names_takes_codes_and_says_so(tmp_path):

    codes = np.asarray([[0.1, 0], [0.9, 1], [0.4, 2], [0.7, 0], [0.3, 1], [0.6, 2]])
    trained = xgboost.DMatrix(
        codes,
        label=[0, 1, 1, 0, 0, 1],
        feature_names=["size", "color"],
        feature_types=["q", "c"],
        enable_categorical=True,
    )
    booster = xgboost.train({"max_depth": 2}, trained, num_boost_round=3)
    predictor = _served_booster(booster, tmp_path)
    expected = booster.predict(xgboost.DMatrix(codes[[2, 1]], feature_names=["size", "color"]))
    np.testing.assert_allclose(predictor.predict([[0.4, 2], [0.9, 1]]), expected, rtol=1e-6)
    with pytest.raises(Exception) as refused:
        predictor.predict([[0.4, "green"]])
    assert str(refused.value) == (
        "feature 'color' takes its categories' codes (numbers); instance 0 holds a string, 'green'"
    )
    assert getattr(refused.value, "status_code", None) == 400


def test_categories_that_are_not_ascii_go_by_code_or_the_model_is_refused(tmp_path):
    """XGBoost stores such names cut at the wrong places and maps them to wrong codes: a
    Booster takes the codes (which map right), a scikit-learn-API model is not served."""
    import pandas as pd

    from cpr_function.errors import LoadError
    from cpr_function.frameworks import estimators

    names = ["rouge-é", "x", "日本"]  # in code point order: the codes 0, 1, 2
    frame = pd.DataFrame(
        {"size": [0.5] * 30, "c": pd.Categorical([names[i % 3] for i in range(30)])}
    )
    labels = [i % 3 == 2 for i in range(30)]  # "日本" is the class
    booster, predictor = _categorical_booster(frame, labels, tmp_path)
    by_code = predictor.predict([[0.5, 2], [0.5, 1]])
    assert by_code[0] > 0.5 > by_code[1]
    with pytest.raises(Exception) as refused:
        predictor.predict([[0.5, "日本"]])
    assert str(refused.value) == (
        "feature 'c' takes its categories' codes (numbers); instance 0 holds a string, '日本'"
    )
    classifier = xgboost.XGBClassifier(n_estimators=3, max_depth=2, enable_categorical=True)
    joblib.dump(classifier.fit(frame, labels), tmp_path / "model.joblib")
    with pytest.raises(LoadError, match="categories of feature 'c' are not ASCII"):
        estimators.load(tmp_path / "model.joblib")


def test_a_native_library_s_stack_trace_stays_out_of_the_error_message():
    from cpr_function.compat import legacy

    with pytest.raises(xgboost.core.XGBoostError) as raised:
        xgboost.DMatrix(np.asarray([["a", "b"]]))
    assert "Stack trace:" in str(raised.value)  # what XGBoost puts in its message
    described = legacy.describe(raised.value)
    assert described.startswith("XGBoostError: [") and "is not supported" in described
    assert "Stack trace" not in described and "[bt]" not in described and "\n" not in described


@pytest.mark.parametrize(
    "framework,declared",
    [("scikit-learn", True), ("xgboost", True), ("tensorflow", False), ("mlflow", False)]
    + [(None, False)],
)
def test_which_frameworks_declare_batchable_before_any_model_is_loaded(framework, declared):
    from cpr_function import frameworks

    assert frameworks.declares_batchable(framework) is declared
