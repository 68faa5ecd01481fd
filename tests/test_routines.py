"""Custom prediction routines in the shapes public ones took, served end to end.

Each routine (its source is in routines_source.py) is packaged as its author packaged it,
uploaded with a tiny model trained here to the storage emulator, served by a real function
process, and called with the client its author used: googleapiclient's `ml` v1. Every test
checks what that author would see: the predictions, against what the model computes when
called directly.
"""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import routines_source as src
from conftest import make_tar, ml_v1, upload_dir, upload_file

VERSION = "projects/p/models/default/versions/v1"


def setup_py(name: str, **arguments) -> str:
    """A 2019-style setup.py calling setup() with literal arguments."""
    given = "".join(f", {key}={value!r}" for key, value in arguments.items())
    return f"from setuptools import setup\n\nsetup(name={name!r}, version='0.1'{given})\n"


def sdist(folder: Path, name: str, files: dict[str, str]) -> Path:
    """`name`-0.1.tar.gz holding `files` under name-0.1/, as `setup.py sdist` lays it out."""
    top = f"{name}-0.1"
    return make_tar(
        folder / f"{top}.tar.gz", {f"{top}/{path}": text for path, text in files.items()}
    )


def publish(bucket, prefix: str, model_dir: Path, package: Path, prediction_class: str) -> dict:
    """A routine's model directory and package uploaded under `prefix`, as a version names them."""
    return {
        "origin": upload_dir(bucket, model_dir, f"{prefix}/model"),
        "package": upload_file(bucket, package, f"{prefix}/staging/{package.name}"),
        "class": prediction_class,
    }


def serve(function, routine: dict, tmp_path: Path):
    return function(
        {
            "CPR_ORIGIN": routine["origin"],
            "CPR_PACKAGE_URIS": routine["package"],
            "CPR_PREDICTION_CLASS": routine["class"],
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
        }
    )


def ask(fn, body: dict, name: str = VERSION) -> dict:
    with ml_v1(fn.url) as ml:
        return ml.projects().predict(name=name, body=body).execute()


def folder(root: Path, name: str) -> Path:
    made = root / name
    made.mkdir(parents=True)
    return made


# 1. scikit-learn iris classifier with a preprocessor of its own, shipped as scripts.

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.7, 5.1, 1.6], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def iris(tmp_path_factory, module_bucket):
    tmp = tmp_path_factory.mktemp("iris")
    source, model_dir = folder(tmp, "source"), folder(tmp, "model")
    files = {"preprocess.py": src.IRIS_PREPROCESS, "predictor.py": src.IRIS_PREDICTOR}
    for name, text in files.items():
        (source / name).write_text(text)
    trained = subprocess.run(
        [sys.executable, "-c", src.IRIS_TRAIN, str(source), str(model_dir), json.dumps(IRIS_ROWS)],
        check=True,
        capture_output=True,
        text=True,
    )
    files["setup.py"] = setup_py("iris_custom", scripts=["predictor.py", "preprocess.py"])
    package = sdist(tmp, "iris_custom", files)
    return {
        **publish(module_bucket, "iris", model_dir, package, "predictor.IrisPredictor"),
        **json.loads(trained.stdout),
    }


def test_an_iris_routine_answers_class_names_or_probabilities_when_asked(function, iris, tmp_path):
    fn = serve(function, iris, tmp_path)
    names = ask(fn, {"instances": IRIS_ROWS})
    probabilities = ask(fn, {"instances": IRIS_ROWS, "probabilities": True})
    assert names == {"predictions": iris["names"]}
    assert set(iris["names"]) == {"setosa", "versicolor", "virginica"}
    np.testing.assert_allclose(probabilities["predictions"], iris["probabilities"], rtol=1e-12)
    # GET / says what was put back for the 2019 import.
    assert fn.version_status()["compatibility"] == [
        {
            "shim": "legacy import",
            "detail": "sklearn.externals.joblib (gone from today's libraries) is joblib",
        }
    ]


# 2 and 8. TensorFlow: a Keras text classifier, and a TensorFlow 1.x graph on tf.compat.v1.

TEXTS = ["my parcel is broken", "thank you, great service", "where is my order", "zebra"]
GRAPH_WEIGHTS = [[1.0, -0.5, 0.25], [0.5, 2.0, -1.0], [-1.5, 0.75, 1.0]]
GRAPH_BIAS = [0.1, -0.2, 0.05]


@pytest.fixture(scope="module")
def tensorflow_models(tmp_path_factory, module_bucket):
    """Both TensorFlow routines, made in one subprocess (TensorFlow takes seconds to import)."""
    tmp = tmp_path_factory.mktemp("tensorflow")
    source, text_dir, graph_dir = folder(tmp, "source"), folder(tmp, "text"), tmp / "graph"
    (source / "text_preprocessor.py").write_text(src.TEXT_PREPROCESSOR)
    made = subprocess.run(
        [sys.executable, "-c", src.TENSORFLOW_TRAIN, str(source), str(text_dir)]
        + [json.dumps(TEXTS), str(graph_dir), json.dumps([GRAPH_WEIGHTS, GRAPH_BIAS])],
        check=True,
        capture_output=True,
        text=True,
    )
    text_files = {
        "setup.py": setup_py("text_classifier", py_modules=["predictor", "text_preprocessor"]),
        "predictor.py": src.TEXT_PREDICTOR,
        "text_preprocessor.py": src.TEXT_PREPROCESSOR,
    }
    text_package = sdist(folder(tmp, "text_dist"), "text_classifier", text_files)
    graph_files = {
        "setup.py": setup_py("graph_routine", scripts=["predictor.py"]),
        "predictor.py": src.GRAPH_PREDICTOR,
    }
    graph_package = sdist(folder(tmp, "graph_dist"), "graph_routine", graph_files)
    return {
        "text": publish(module_bucket, "text", text_dir, text_package, "predictor.TextClassifier"),
        "text_scores": json.loads(made.stdout.splitlines()[-1]),
        "graph": publish(
            module_bucket, "graph", graph_dir, graph_package, "predictor.GraphPredictor"
        ),
    }


def test_a_keras_text_classifier_with_a_pickled_tokenizer_answers_on_the_model_name(
    function, tensorflow_models, tmp_path
):
    fn = serve(function, tensorflow_models["text"], tmp_path)
    answer = ask(fn, {"instances": TEXTS}, name="projects/p/models/default")
    scores = np.asarray(tensorflow_models["text_scores"])
    labels = ["complaint", "praise", "question"]
    expected = [labels[i] for i in scores.argmax(1)]
    assert len(set(expected)) == 3
    assert [p["label"] for p in answer["predictions"]] == expected
    got = [p["score"] for p in answer["predictions"]]
    np.testing.assert_allclose(got, scores.max(axis=1), rtol=1e-5)


def test_a_tf_compat_v1_session_runs_the_saved_graph(function, tensorflow_models, tmp_path):
    fn = serve(function, tensorflow_models["graph"], tmp_path)
    rows = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 2.0]]
    answer = ask(fn, {"instances": rows})
    logits = np.asarray(rows) @ np.asarray(GRAPH_WEIGHTS) + np.asarray(GRAPH_BIAS)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(answer["predictions"], softmax, rtol=1e-5)


# 3. An XGBoost Booster with metadata in assets/, instances keyed by feature name.

FEATURES = ["age", "income", "visits", "tenure"]
TIERS = ["bronze", "silver", "gold"]


def test_a_booster_routine_reads_named_features_and_its_metadata(function, module_bucket, tmp_path):
    import xgboost as xgb

    rng = np.random.default_rng(11)
    rows = rng.uniform(0, 10, size=(150, 4)).round(2)
    tiers = (rows[:, 1] + rows[:, 2] > 8).astype(int) + (rows[:, 1] > 7).astype(int)
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(rows, label=tiers, feature_names=FEATURES), 8)
    model_dir = folder(tmp_path, "model")
    # Saved in today's format, under the name AI Platform gave it.
    booster.save_model(str(model_dir / "model.ubj"))
    (model_dir / "model.ubj").rename(model_dir / "model.bst")
    metadata = {"feature_names": FEATURES, "labels": TIERS}
    (folder(model_dir, "assets") / "model_metadata.json").write_text(json.dumps(metadata))
    files = {
        "setup.py": setup_py("tiers", scripts=["predictor.py"]),
        "predictor.py": src.BOOSTER_PREDICTOR,
    }
    package = sdist(tmp_path, "tiers", files)
    routine = publish(module_bucket, "tiers", model_dir, package, "predictor.BoosterPredictor")

    fn = serve(function, routine, tmp_path)
    customers = [
        {"visits": 6.5, "age": 3.0, "tenure": 1.0, "income": 8.2},
        {"income": 1.0, "tenure": 9.0, "age": 7.5, "visits": 2.0},
        {"tenure": 4.0, "visits": 6.0, "income": 4.5, "age": 5.0},
    ]
    answer = ask(fn, {"instances": customers, "signature_name": "serving_default"})
    grid = np.array([[c[name] for name in FEATURES] for c in customers])
    expected = booster.predict(xgb.DMatrix(grid, feature_names=FEATURES))
    predictions = answer["predictions"]
    assert [p["predicted_label"] for p in predictions] == [TIERS[i] for i in expected.argmax(1)]
    assert len(set(p["predicted_label"] for p in predictions)) > 1
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, rtol=1e-6)


# 4 and 9. A regressor over a DataFrame whose predict takes no **kwargs; two versions of it.

COLUMNS = ["rooms", "area", "age"]
HOUSES = [[3, 72.5, 30], [5, 140.0, 4], [1, 31.0, 55]]


@pytest.fixture(scope="module")
def prices(tmp_path_factory, module_bucket):
    """One package, two model directories: a ridge regression and a boosted one."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge

    tmp = tmp_path_factory.mktemp("prices")
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "rooms": rng.integers(1, 7, 120),
            "area": rng.uniform(20, 200, 120).round(1),
            "age": rng.integers(0, 80, 120),
        }
    )
    price = 2000 * frame["area"] + 15000 * frame["rooms"] - 900 * frame["age"]
    models = {
        "v1": Ridge(alpha=1.0).fit(frame, price),
        "v2": GradientBoostingRegressor(n_estimators=30, max_depth=2, random_state=0).fit(
            frame, price
        ),
    }
    files = {
        "setup.py": setup_py("prices", scripts=["predictor.py"]),
        "predictor.py": src.PRICE_PREDICTOR,
    }
    package = upload_file(module_bucket, sdist(tmp, "prices", files), "prices/prices-0.1.tar.gz")
    origins = {}
    for version, model in models.items():
        model_dir = folder(tmp, version)
        joblib.dump(model, model_dir / "model.joblib")
        origins[version] = upload_dir(module_bucket, model_dir, f"prices/{version}")
    return {"models": models, "origins": origins, "package": package}


def price_of(model, houses) -> list[float]:
    return model.predict(pd.DataFrame(houses, columns=COLUMNS)).tolist()


def test_a_predict_without_kwargs_answers_its_numpy_array(function, prices, tmp_path):
    from googleapiclient.errors import HttpError

    routine = {
        "origin": prices["origins"]["v1"],
        "package": prices["package"],
        "class": "predictor.PricePredictor",
    }
    fn = serve(function, routine, tmp_path)
    assert ask(fn, {"instances": HOUSES}) == {
        "predictions": price_of(prices["models"]["v1"], HOUSES)
    }
    # A field it cannot take fails as it did on AI Platform, which passed every field on.
    with pytest.raises(HttpError) as error:
        ask(fn, {"instances": HOUSES, "currency": "EUR"})
    assert error.value.resp.status == 500
    assert "unexpected keyword argument 'currency'" in error.value.content.decode()


def test_versions_sharing_one_package_answer_with_their_own_models(function, prices, tmp_path):
    versions = {
        version: {
            "origin": origin,
            "package_uris": [prices["package"]],
            "prediction_class": "predictor.PricePredictor",
        }
        for version, origin in prices["origins"].items()
    }
    models_file = tmp_path / "models.json"
    models_file.write_text(
        json.dumps({"models": {"m": {"default_version": "v2", "versions": versions}}})
    )
    fn = function({"CPR_MODELS": str(models_file), "CPR_CACHE_DIR": str(tmp_path / "cache")})
    expected = {v: price_of(model, HOUSES) for v, model in prices["models"].items()}
    assert expected["v1"] != expected["v2"]
    for version in ("v1", "v2"):
        answer = ask(fn, {"instances": HOUSES}, name=f"projects/p/models/m/versions/{version}")
        assert answer == {"predictions": expected[version]}, version
    assert ask(fn, {"instances": HOUSES}, name="projects/p/models/m") == {
        "predictions": expected["v2"]
    }


# 5. Images: binary PGM files as {"b64": ...} objects, or as bare base64 strings.


def pgm(pixels: np.ndarray) -> bytes:
    height, width = pixels.shape
    return b"P5\n%d %d\n255\n" % (width, height) + pixels.astype(np.uint8).tobytes()


@pytest.mark.parametrize("form", ["b64 object", "base64 string"])
def test_pgm_images_are_classified_by_the_brightness_of_a_corner(
    function, module_bucket, tmp_path, form
):
    model_dir = folder(tmp_path, "model")
    config = {"threshold": 0.5, "labels": ["dark", "bright"]}
    (model_dir / "config.json").write_text(json.dumps(config))
    files = {
        "setup.py": setup_py("brightness", scripts=["predictor.py"]),
        "predictor.py": src.BRIGHTNESS_PREDICTOR,
    }
    package = sdist(tmp_path, "brightness", files)
    prefix = f"brightness/{form.split()[0]}"
    routine = publish(module_bucket, prefix, model_dir, package, "predictor.BrightnessClassifier")

    rng = np.random.default_rng(8)
    dark, bright = rng.integers(0, 90, (5, 6)), rng.integers(170, 256, (6, 4))
    corner = rng.integers(0, 60, (7, 7))
    corner[:3, :3] = [[255, 250, 240], [230, 200, 255], [9, 10, 32]]  # whitespace bytes too
    images = [dark, bright, corner]
    encoded = [base64.b64encode(pgm(image)).decode() for image in images]
    if form == "b64 object":
        instances = [{"image_bytes": {"b64": text}} for text in encoded]
    else:
        instances = encoded

    fn = serve(function, routine, tmp_path)
    answer = ask(fn, {"instances": instances, "size": 3})
    levels = [float(image[:3, :3].mean() / 255) for image in images]
    expected = [config["labels"][level > config["threshold"]] for level in levels]
    assert [p["label"] for p in answer["predictions"]] == expected
    assert [p["brightness"] for p in answer["predictions"]] == pytest.approx(levels, rel=1e-12)
    # The corner is bright only at size 3: at the routine's default size 4 it is dark.
    assert expected == ["dark", "bright", "bright"] and corner[:4, :4].mean() / 255 < 0.5


# 6. A tagger in a find_packages() layout, with a declared dependency left uninstalled.

TAGGED = [
    ("The cat sat on the mat", "DET NOUN VERB ADP DET NOUN"),
    ("A dog ran to the park", "DET NOUN VERB ADP DET NOUN"),
    ("The 3 birds sang in a tree", "DET NUM NOUN VERB ADP DET NOUN"),
    ("Anna walked 2 dogs", "PROPN VERB NUM NOUN"),
    ("Paris loves the old river", "PROPN VERB DET ADJ NOUN"),
    ("A small boat sailed to Oslo", "DET ADJ NOUN VERB ADP PROPN"),
]


def test_a_tagger_inside_a_package_tags_every_token(function, module_bucket, tmp_path):
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    features = {}
    exec(src.TAGGER_FEATURES, features)  # the routine's own feature function
    token_features = features["token_features"]
    tokens = [word for sentence, _ in TAGGED for word in sentence.split()]
    tags = [tag for _, line in TAGGED for tag in line.split()]
    model = make_pipeline(DictVectorizer(), LogisticRegression(max_iter=2000))
    model.fit([token_features(t) for t in tokens], tags)
    model_dir = folder(tmp_path, "model")
    joblib.dump(model, model_dir / "model.joblib")
    files = {
        "setup.py": src.TAGGER_SETUP,
        "routine/__init__.py": "",
        "routine/features.py": src.TAGGER_FEATURES,
        "routine/predictor.py": src.TAGGER_PREDICTOR,
    }
    package = sdist(tmp_path, "tagger", files)
    routine = publish(module_bucket, "tagger", model_dir, package, "routine.predictor.Tagger")

    fn = serve(function, routine, tmp_path)
    sentences = ["The bird sat on a boat", "Oslo loves 7 old trees", ""]
    answer = ask(fn, {"instances": sentences})
    expected = [
        model.predict([token_features(t) for t in s.split()]).tolist() if s else []
        for s in sentences
    ]
    assert answer == {"predictions": expected}
    assert [len(tagged) for tagged in answer["predictions"]] == [6, 5, 0]
    assert len({tag for tagged in expected for tag in tagged}) > 3


# 7. A random forest pickled with plain pickle in a `deploy` package: four genres a row.

GENRES = np.array(["action", "comedy", "documentary", "drama", "horror", "romance"])


def test_a_pickled_forest_in_a_deploy_package_ranks_four_genres_a_row(
    function, module_bucket, tmp_path
):
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(21)
    viewers = rng.integers(0, 100, size=(180, 5))
    liked = GENRES[(viewers[:, 0] // 20 + viewers[:, 1] // 50) % 6]
    model = RandomForestClassifier(n_estimators=25, max_depth=5, random_state=0)
    model.fit(viewers, liked)
    model_dir = folder(tmp_path, "model")
    with open(model_dir / "model.pkl", "wb") as f:
        pickle.dump(model, f)
    files = {
        "setup.py": setup_py("recommender", packages=["deploy"]),
        "deploy/__init__.py": "",
        "deploy/predictor.py": src.RANKER_PREDICTOR,
    }
    package = sdist(tmp_path, "recommender", files)
    routine = publish(
        module_bucket, "recommender", model_dir, package, "deploy.predictor.Predictor"
    )

    fn = serve(function, routine, tmp_path)
    rows = [[12, 80, 3, 44, 9], [95, 10, 50, 50, 50], [40, 49, 0, 99, 1]]
    answer = ask(fn, {"instances": rows})
    expected = []
    for p in model.predict_proba(np.array(rows)):
        best = sorted(range(len(p)), key=lambda i: -p[i])[:4]
        expected.append([str(model.classes_[i]) for i in best])
    assert answer == {"predictions": expected}
    assert all(len(row) == 4 and len(set(row)) == 4 for row in answer["predictions"])


# 10. One NumPy scalar for the whole call, or a list of chunk means when asked.


def test_a_numpy_scalar_is_answered_as_one_number_and_reported_as_a_shim(
    function, module_bucket, tmp_path
):
    model_dir = folder(tmp_path, "model")
    (model_dir / "calibration.json").write_text(json.dumps({"scale": 1.5, "offset": -2.0}))
    files = {
        "setup.py": setup_py("sensors", py_modules=["aggregate"]),
        "aggregate.py": src.MEAN_PREDICTOR,
    }
    package = sdist(tmp_path, "sensors", files)
    routine = publish(module_bucket, "sensors", model_dir, package, "aggregate.MeanReading")

    fn = serve(function, routine, tmp_path)
    readings = [3.0, 4.5, 7.25, 10.0, 1.0, 2.5]
    calibrated = [1.5 * r - 2.0 for r in readings]
    whole = ask(fn, {"instances": readings})
    assert isinstance(whole["predictions"], float)
    assert whole["predictions"] == pytest.approx(sum(calibrated) / 6, rel=1e-6)
    chunked = ask(fn, {"instances": readings, "chunks": 2})
    halves = [sum(calibrated[:3]) / 3, sum(calibrated[3:]) / 3]
    assert chunked["predictions"] == pytest.approx(halves, rel=1e-6)
    shims = fn.version_status()["compatibility"]
    assert [s["shim"] for s in shims] == ["prediction count"]
    assert "predict returned a float32, not a list, for 6 instances" in shims[0]["detail"]
