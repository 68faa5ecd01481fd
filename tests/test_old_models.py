"""Model files written by the releases of AI Platform's years load and predict as they did.

Files written by today's releases stand in where the difference is one the tests can
make exactly (a parameter the writing release did not have yet); files written by the
old releases themselves are in tests/fixtures/legacy/ (made once by its make_fixtures.py).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IRIS, REPO

# A forest as scikit-learn 1.1 pickled it: without the parameters added since (1.4's
# monotonic_cst, 1.2's ... ), its version recorded in each estimator's state.
OLD_FOREST = """
import json, pickle, sys
import sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

x, y = load_iris(return_X_y=True)
model = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x, y)
for estimator in [model, *model.estimators_]:
    for name in ("monotonic_cst", "max_samples", "ccp_alpha"):
        if name in vars(estimator):
            delattr(estimator, name)
data = pickle.dumps(model, protocol=4)
version = sklearn.__version__.encode()
assert len(version) == 5, version  # replaced in place by a release name of the same length
with open(sys.argv[1], "wb") as f:
    f.write(data.replace(version, b"1.1.3"))
print(json.dumps(model.predict(json.loads(sys.argv[2])).tolist()))
"""


@pytest.fixture(scope="module")
def old_forest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forest") / "model"
    folder.mkdir()
    made = subprocess.run(
        [sys.executable, "-c", OLD_FOREST, str(folder / "model.pkl"), json.dumps(IRIS)],
        capture_output=True,
        check=True,
    )
    return folder, json.loads(made.stdout)


def test_a_model_pickled_before_its_parameters_existed_is_served(function, old_forest, tmp_path):
    folder, expected = old_forest
    fn = function({"CPR_ORIGIN": str(folder), "CPR_CACHE_DIR": str(tmp_path / "cache")})
    answer = fn.predict({"instances": IRIS})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": expected}
    upgrades = [s["detail"] for s in fn.version_status()["compatibility"]]
    upgrades = [d for d in upgrades if d.startswith("RandomForestClassifier was pickled")]
    assert upgrades == [
        "RandomForestClassifier was pickled by scikit-learn 1.1.3, before these parameters "
        "existed; set to the values that keep its behaviour: ccp_alpha=0.0, "
        "max_samples=None, monotonic_cst=None"
    ]


def test_get_params_answers_on_such_a_model_once_unpickled_in_a_deployment(old_forest):
    from cpr_function.compat import legacy

    data = (old_forest[0] / "model.pkl").read_bytes()
    legacy.install()
    with pytest.warns(Warning):  # scikit-learn's own: another release wrote it
        model = pickle.loads(data)
    params = model.get_params()
    assert (params["monotonic_cst"], params["ccp_alpha"], params["max_samples"]) == (
        None,
        0.0,
        None,
    )
    assert model.estimators_[0].get_params()["monotonic_cst"] is None


# A pickle of scikit-learn 0.20 naming a class that release had and today's has not.
IMPUTER_0_20 = """
import pickle, sys
import numpy as np
import sklearn
from sklearn.impute import SimpleImputer

model = SimpleImputer().fit(np.array([[1.0, 2.0], [3.0, np.nan]]))
data = pickle.dumps(model, protocol=2)
old = b"sklearn.preprocessing.imputation\\nImputer\\n"
data = data.replace(b"sklearn.impute._base\\nSimpleImputer\\n", old)
data = data.replace(sklearn.__version__.encode(), b"0.20.3")
sys.stdout.buffer.write(data)
"""

# A model whose pickle names a class of the author's own training module.
OWN_CLASS = """
import pickle, sys
sys.path.insert(0, sys.argv[1])
import churn_features

sys.stdout.buffer.write(pickle.dumps(churn_features.Scaler(2.0)))
"""


def _model_dir(tmp_path, name: str, data: bytes):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / name).write_bytes(data)
    return folder


def _written(code: str, *args: str) -> bytes:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, check=True
    ).stdout


@pytest.mark.parametrize(
    "case",
    ["native stack", "class gone from scikit-learn", "the author's own module"],
)
def test_a_model_that_cannot_load_says_who_wrote_it_and_what_to_do(function, tmp_path, case):
    if case == "native stack":
        folder = _model_dir(tmp_path, "model.bst", b"binf" + bytes(range(200)))
        wanted = [
            "model.bst is not JSON or UBJSON, so it should be an XGBoost Booster in the binary "
            "format of XGBoost before 2.0, and Treelite cannot read it either: ",
            "To fix: load it once with the XGBoost release that wrote it",
        ]
    elif case == "class gone from scikit-learn":
        folder = _model_dir(tmp_path, "model.pkl", _written(IMPUTER_0_20))
        wanted = [
            "loading model.pkl as a scikit-learn model failed: ModuleNotFoundError: No module "
            "named 'sklearn.preprocessing.imputation'; the file was written by scikit-learn "
            "0.20.3, and this runs ",
            ". To fix: the pickle names sklearn.preprocessing.imputation, which the installed "
            "sklearn does not have: install the sklearn release that wrote the file "
            "(requirements.txt), or save the model again with the release installed here",
        ]
    else:
        source = tmp_path / "source"
        source.mkdir()
        (source / "churn_features.py").write_text(
            "class Scaler:\n    def __init__(self, f):\n        self.f = f\n"
        )
        folder = _model_dir(tmp_path, "model.pkl", _written(OWN_CLASS, str(source)))
        wanted = [
            "No module named 'churn_features'",
            "To fix: the pickle names module 'churn_features', which is your own code (where "
            "the class was defined when the model was saved): ship it in a package with "
            "CPR_PACKAGE_URIS (deploy.sh --package-uris)",
        ]
    fn = function({"CPR_ORIGIN": str(folder), "CPR_CACHE_DIR": str(tmp_path / "cache")})
    answer = fn.predict({"instances": IRIS})
    assert answer.status_code == 500
    message = answer.json()["error"]
    for part in wanted:
        assert part in message
    for native in ("[bt]", "Stack trace", "\n", "requirements.txt (requirements-frameworks"):
        assert native not in message
    check = subprocess.run(
        [sys.executable, "-m", "cpr_function", "check", "--model-dir", str(folder)]
        + ["--cache-dir", str(tmp_path / "check-cache")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert check.returncode == 1
    (failed,) = [line for line in check.stdout.splitlines() if "FAIL" in line]
    for part in wanted:
        assert part in failed
    assert "[bt]" not in check.stdout + check.stderr


LEGACY = Path(__file__).parent / "fixtures" / "legacy"


def _fixtures(framework: str, file: str) -> list[Path]:
    """The fixture folders of one framework's model files of one name, in release order."""
    found = []
    for expected in sorted(LEGACY.glob("*/*/expected.json")):
        written = json.loads(expected.read_text())
        if written["framework"] == framework and written["file"] == file:
            found.append(expected.parent)
    return found


def _as_float32(values) -> list:
    import numpy as np

    return np.asarray(values, dtype=np.float32).tolist()


BINARY_BOOSTERS = _fixtures("xgboost", "model.bst")
OLD_FILES = sorted(
    {
        f
        for framework in ("xgboost", "scikit-learn")
        for name in ("model.bst", "model.pkl", "model.joblib")
        for f in _fixtures(framework, name)
    }  # fmt: skip
)


@pytest.fixture(scope="module")
def old_files_served(tmp_path_factory):
    """One function serving every fixture model file as a version of model `old`."""
    from conftest import FunctionProcess

    tmp = tmp_path_factory.mktemp("old")
    versions = {f"{f.parent.name}-{f.name}".replace(".", "_"): f for f in OLD_FILES}
    entries = {}
    for version, folder in versions.items():
        framework = json.loads((folder / "expected.json").read_text())["framework"]
        entries[version] = {"origin": str(folder), "framework": framework}
    models = {"models": {"old": {"default_version": next(iter(versions)), "versions": entries}}}
    (tmp / "models.json").write_text(json.dumps(models))
    # One process for all: a process each would import scikit-learn a hundred times.
    env = {"CPR_MODELS": str(tmp / "models.json"), "CPR_CACHE_DIR": str(tmp / "cache")}
    fn = FunctionProcess({**env, "CPR_ISOLATION": "none"}, tmp / "function.log").start()
    yield fn, versions
    fn.stop()


def test_fixtures_cover_the_releases_of_ai_platforms_years():
    releases = {f.parent.name for f in OLD_FILES}
    wanted = {"xgboost-0.82", "xgboost-1.7.6", "scikit-learn-0.20.4", "scikit-learn-1.2.2"}
    assert wanted <= releases, releases
    kinds = " ".join(json.loads((f / "expected.json").read_text())["kind"] for f in OLD_FILES)
    for kind in ("regression", "binary", "multi", "RandomForest", "DecisionTree",
                 "GradientBoosting", "Pipeline", "DataFrame", "XGBClassifier",
                 "GradientBoostingClassifier, 3 classes", "liblinear"):  # fmt: skip
        assert kind.lower() in kinds.lower(), kind


def _instances(expected: dict) -> list:
    """The instances as rows, or as objects keyed by feature for a model fitted on a frame."""
    columns = expected.get("columns")
    # AI Platform's XGBoost server took rows only; scikit-learn kept names from 1.0 on.
    if columns is None or expected["framework"] != "scikit-learn":
        return expected["instances"]
    if expected["writer"]["version"] < "1.0":
        return expected["instances"]
    return [dict(zip(columns, row, strict=True)) for row in expected["instances"]]


def test_old_model_files_predict_what_the_writing_release_did(old_files_served):
    import numpy as np

    fn, versions = old_files_served
    for version, folder in versions.items():
        expected = json.loads((folder / "expected.json").read_text())
        path = f"/v1/projects/p/models/old/versions/{version}:predict"
        answer = fn.predict({"instances": _instances(expected)}, path=path)
        assert answer.status_code == 200, (version, answer.text)
        got, wanted = answer.json()["predictions"], expected["predictions"]
        if "probabilities" in expected:  # a classifier: its classes exactly
            assert got == wanted, version
            body = {"instances": _instances(expected), "probabilities": True}
            proba = fn.predict(body, path=path).json()["predictions"]
            np.testing.assert_allclose(proba, expected["probabilities"], rtol=1e-6, err_msg=version)
        else:
            np.testing.assert_allclose(got, wanted, rtol=1e-6, err_msg=version)
        noted = fn.version_status("old", version)["compatibility"]
        shims = {s["shim"] for s in noted}
        writer = expected["writer"]["version"]
        if expected["framework"] == "scikit-learn":  # GET / and check say who wrote it
            said = f"{expected['file']} was written by scikit-learn {writer}; this runs "
            assert any(s["detail"].startswith(said) for s in noted), version
        if expected["file"] == "model.bst" or (
            writer < "1.6" and expected["framework"] == "xgboost"
        ):
            assert "model conversion" in shims, version
        if expected["framework"] == "scikit-learn" and writer < "1.3":
            assert "pickle upgrade" in shims, version


def test_a_converted_tree_refuses_missing_values_as_its_release_did(old_files_served):
    fn, versions = old_files_served
    version = next(v for v in versions if v.startswith("scikit-learn-1_1_3-random-forest-clas"))
    expected = json.loads((versions[version] / "expected.json").read_text())
    row = [None, *expected["instances"][0][1:]]
    answer = fn.predict(
        {"instances": [row]}, path=f"/v1/projects/p/models/old/versions/{version}:predict"
    )
    assert answer.status_code in (400, 500)
    assert "NaN" in answer.json()["error"]["message"]


def test_binary_boosters_are_carried_over_to_the_last_bit_from_1_3_on(old_files_served):
    fn, versions = old_files_served
    for version, folder in versions.items():
        expected = json.loads((folder / "expected.json").read_text())
        if expected["file"] != "model.bst":
            continue
        path = f"/v1/projects/p/models/old/versions/{version}:predict"
        got = fn.predict({"instances": expected["instances"]}, path=path).json()["predictions"]
        release = expected["writer"]["version"]
        if release >= "1.3":
            # Today's XGBoost sums the trees in the order 1.3 and later did: to the last bit.
            assert _as_float32(got) == _as_float32(expected["predictions"]), version
        status = fn.version_status("old", version)
        (conversion,) = [s for s in status["compatibility"] if s["shim"] == "model conversion"]
        written = "before 1.0" if release.startswith("0.") else release.rsplit(".", 1)[0]
        assert f"written by XGBoost {written} in its binary format" in conversion["detail"]


def test_an_old_classifier_answers_the_labels_its_encoder_kept():
    # XGBoost 1.0 to 1.5 pickled a label encoder with its classifiers and answered its labels.
    import numpy as np
    from sklearn.preprocessing import LabelEncoder
    from xgboost import XGBClassifier

    from cpr_function.compat import legacy, xgboost_pickles

    legacy.install()
    xgboost_pickles.install()  # again: each class is patched once
    rows = np.linspace(0, 1, 40).reshape(-1, 1)
    model = XGBClassifier(n_estimators=5, max_depth=2).fit(rows, (rows[:, 0] > 0.5).astype(int))
    indexes = model.predict(rows)  # today's: no encoder, class indexes
    assert sorted(set(indexes.tolist())) == [0, 1]
    model._le = LabelEncoder().fit(["no", "yes"])
    assert model.predict(rows).tolist() == [["no", "yes"][i] for i in indexes]
    assert model.classes_.tolist() == ["no", "yes"]
    model._le = LabelEncoder().fit([0, 1])  # the indexes themselves: nothing to map
    assert model.classes_.tolist() == [0, 1]


# A routine of 2019 loading the .h5 file Keras 2.2.4 wrote for it, as its from_path did.
KERAS_ROUTINE = """
import os

import numpy as np
import tensorflow as tf


class KerasPredictor(object):
    def __init__(self, model):
        self._model = model

    @classmethod
    def from_path(cls, model_dir):
        return cls(tf.keras.models.load_model(os.path.join(model_dir, "model.h5")))

    def predict(self, instances, **kwargs):
        return self._model.predict(np.asarray(instances)).tolist()
"""


def _keras_2_2_4_h5(path: Path) -> None:
    """A Sequential of one Dense layer laid out as Keras 2.2.4 saved it: its config a list."""
    import h5py
    import numpy as np

    dense = {"name": "dense_1", "trainable": True, "batch_input_shape": [None, 4], "units": 1}
    dense.update(dtype="float32", activation="linear", use_bias=True)
    config = {"class_name": "Sequential", "config": [{"class_name": "Dense", "config": dense}]}
    with h5py.File(path, "w") as f:
        f.attrs.update(keras_version=b"2.2.4", backend=b"tensorflow")
        f.attrs["model_config"] = json.dumps(config).encode()
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = [b"dense_1"]
        layer = weights.create_group("dense_1")
        layer.attrs["weight_names"] = [b"dense_1/kernel:0", b"dense_1/bias:0"]
        layer.create_group("dense_1")["kernel:0"] = np.ones((4, 1), "float32")
        layer["dense_1"]["bias:0"] = np.zeros((1,), "float32")


# A SavedModel that doubles its input, written by today's TensorFlow.
DOUBLING = """
import sys
import tensorflow as tf

class Doubling(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def serve(self, x):
        return {"y": x * 2}

module = Doubling()
tf.saved_model.save(module, sys.argv[1], signatures={"serving_default": module.serve})
"""


@pytest.fixture
def keras_routine(tmp_path):
    """Settings serving a routine that loads the model.h5 of Keras 2.2.4 in from_path."""
    from conftest import make_tar

    model = tmp_path / "model"
    model.mkdir()
    _keras_2_2_4_h5(model / "model.h5")
    package = make_tar(tmp_path / "k-0.1.tar.gz", {"k-0.1/keras_routine.py": KERAS_ROUTINE})
    return {
        "CPR_ORIGIN": str(model),
        "CPR_PACKAGE_URIS": str(package),
        "CPR_PREDICTION_CLASS": "keras_routine.KerasPredictor",
        "CPR_CACHE_DIR": str(tmp_path / "cache"),
    }


def test_a_routine_loading_a_keras_2_file_gets_keras_2(function, keras_routine):
    fn = function(keras_routine)
    answer = fn.predict({"instances": [[1, 2, 3, 4], [0, 0, 0, 0.5]]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [[10.0], [0.5]]}  # a kernel of ones, no bias
    (shim,) = [s for s in fn.version_status()["compatibility"] if s["shim"] == "keras 2"]
    assert shim["detail"].startswith("model.h5 (Keras 2.2.4): tf.keras is Keras 2 (tf-keras 2.")


def test_a_keras_2_file_keras_3_cannot_load_is_named_with_its_release(function, keras_routine):
    # Without the compatibility layer, tf.keras is Keras 3, which fails on the file.
    fn = function({**keras_routine, "CPR_LEGACY_COMPAT": "false"})
    answer = fn.predict({"instances": [[1, 2, 3, 4]]})
    assert answer.status_code == 500
    message = answer.json()["error"]
    assert message.startswith(
        "keras_routine.KerasPredictor.from_path failed: TypeError: pop expected at most 1 "
        "argument, got 2; the model directory holds model.h5 (Keras 2.2.4), and tf.keras "
        "here is Keras 3."
    )
    assert "To fix: add tf-keras (Keras 2, of TensorFlow's release) to requirements.txt" in message


def test_keras_2_after_keras_3_in_one_process_asks_for_a_process_of_its_own(
    function, keras_routine, tmp_path
):
    # A SavedModel served first imports TensorFlow, with Keras 3, in the shared process.
    subprocess.run([sys.executable, "-c", DOUBLING, str(tmp_path / "saved")], check=True)
    versions = {
        "saved": {"origin": str(tmp_path / "saved"), "framework": "tensorflow"},
        "routine": {
            "origin": keras_routine["CPR_ORIGIN"],
            "package_uris": [keras_routine["CPR_PACKAGE_URIS"]],
            "prediction_class": keras_routine["CPR_PREDICTION_CLASS"],
        },
    }
    models = {"models": {"m": {"default_version": "saved", "versions": versions}}}
    (tmp_path / "models.json").write_text(json.dumps(models))
    env = {"CPR_MODELS": str(tmp_path / "models.json"), "CPR_ISOLATION": "none"}
    fn = function({**env, "CPR_CACHE_DIR": keras_routine["CPR_CACHE_DIR"]})
    assert fn.status()["models"]  # served
    schema = fn.predict({"instances": [{}]}, path="/v1/projects/p/models/m/versions/saved:predict")
    assert schema.status_code in (200, 400)  # loaded: TensorFlow is imported now
    answer = fn.predict(
        {"instances": [[1, 2, 3, 4]]}, path="/v1/projects/p/models/m/versions/routine:predict"
    )
    assert answer.status_code == 500
    assert answer.json()["error"]["message"] == (
        "model.h5 (Keras 2.2.4) need tf.keras to be Keras 2, but TensorFlow was already "
        "imported in this process with Keras 3 for another version: serve this version in a "
        "process of its own (CPR_ISOLATION=process)"
    )


WRITERS = """
import sys
from pathlib import Path
import tensorflow as tf
sys.path.insert(0, sys.argv[2])
from cpr_function.compat import keras_files

root = Path(sys.argv[1])
tf.saved_model.save(tf.Module(), str(root / "export" / "1"))
(root / "export" / "1" / "keras_metadata.pb").write_bytes(b"")  # as Keras 2 saved it
print([str(w) for w in keras_files.writers(root)])
"""


def test_a_savedmodel_says_which_tensorflow_and_keras_wrote_it(tmp_path):
    from importlib import metadata

    release = metadata.version("tensorflow-cpu")
    done = subprocess.run(
        [sys.executable, "-c", WRITERS, str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    said = done.stdout.strip().splitlines()[-1]
    assert said == f"['export/1 (TensorFlow {release}, Keras 2)']"


KERAS_2 = sorted(
    [*LEGACY.glob("*keras-2.*/*/expected.json"), *LEGACY.glob("tensorflow-1.*/*/expected.json")]
)

# The routine of 2019 that imported Keras 2.2 itself, beside TensorFlow 1.x.
KERAS_ITSELF_ROUTINE = KERAS_ROUTINE.replace(
    "tf.keras.models.load_model", "keras.models.load_model"
).replace("import tensorflow as tf", "import keras")


def test_files_keras_2_wrote_predict_as_keras_2_did(function, tmp_path):
    """Each .h5 loaded by a routine (a process each), and the SavedModel as a framework model."""
    import numpy as np
    from conftest import make_tar

    # Keras 2.2.4 and TensorFlow 1.15's tf.keras three .h5 files each; Keras 2.6 and 2.7
    # four files each (no legacy Adam yet), Keras 2.12 and tf-keras 2.21 five.
    assert len(KERAS_2) == 24, KERAS_2
    sources = {
        "k-0.1/keras_routine.py": KERAS_ROUTINE,
        "k-0.1/keras_itself.py": KERAS_ITSELF_ROUTINE,
    }
    package = make_tar(tmp_path / "k-0.1.tar.gz", sources)
    versions = {}
    for expected in KERAS_2:
        written = json.loads(expected.read_text())
        name = f"{expected.parent.parent.name}-{expected.parent.name}".replace(".", "_")
        if written["framework"] == "routine":
            # A file standalone Keras wrote is loaded as its routine did: by that Keras.
            itself = expected.parent.parent.name.startswith("keras-2.2")
            module = "keras_itself" if itself else "keras_routine"
            versions[name] = {
                "origin": str(expected.parent),
                "package_uris": [str(package)],
                "prediction_class": f"{module}.KerasPredictor",
            }
        else:
            versions[name] = {"origin": str(expected.parent), "framework": "tensorflow"}
    models = {"models": {"k": {"default_version": next(iter(versions)), "versions": versions}}}
    (tmp_path / "models.json").write_text(json.dumps(models))
    fn = function(
        {"CPR_MODELS": str(tmp_path / "models.json"), "CPR_CACHE_DIR": str(tmp_path / "cache")}
    )
    for expected in KERAS_2:
        written = json.loads(expected.read_text())
        name = f"{expected.parent.parent.name}-{expected.parent.name}".replace(".", "_")
        path = f"/v1/projects/p/models/k/versions/{name}:predict"
        answer = fn.predict({"instances": written["instances"]}, path=path)
        assert answer.status_code == 200, (name, answer.text)
        got = np.asarray(answer.json()["predictions"], dtype=float).reshape(-1)
        wanted = np.asarray(written["predictions"], dtype=float).reshape(-1)
        # float32 outputs: an output near zero is a sum of terms near 1, each rounded to
        # float32 (half a unit in the last place at 1 is 6e-8) by kernels of other releases.
        np.testing.assert_allclose(got, wanted, rtol=1e-6, atol=1e-7, err_msg=name)
        if written["framework"] == "routine":
            shims = fn.version_status("k", name)["compatibility"]
            assert any(s["shim"] == "keras 2" for s in shims), (name, shims)
            if "keras_itself" in versions[name]["prediction_class"]:
                said = "keras (Keras 2 for this version's files) is tf_keras"
                assert any(s["detail"] == said for s in shims), (name, shims)


def test_a_keras_2_savedmodel_without_tf_keras_says_to_add_it(function, tmp_path):
    """TensorFlow revives Keras 2's optimizer with tf-keras; a deployment without it fails."""
    hidden = tmp_path / "hidden"
    (hidden / "tf_keras").mkdir(parents=True)
    (hidden / "tf_keras" / "__init__.py").write_text("raise ImportError('not installed')\n")
    written = LEGACY / "keras-2.7.0" / "savedmodel-adam"
    fn = function(
        {
            "CPR_ORIGIN": str(written),
            "CPR_FRAMEWORK": "tensorflow",
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
            "PYTHONPATH": str(hidden),
        }
    )
    instances = json.loads((written / "expected.json").read_text())["instances"]
    answer = fn.predict({"instances": instances})
    assert answer.status_code == 500
    message = answer.json()["error"]
    assert message.startswith(
        "loading the SavedModel failed: AttributeError: '_UserObject' object has no attribute "
        "'add_slot'; the model directory holds saved_model.pb (TensorFlow 2.7.4, Keras 2), "
        "and tf.keras here is Keras 3."
    ), message
    assert "To fix: add tf-keras (Keras 2, of TensorFlow's release) to requirements.txt" in message


READ_BACK = """
import pickle, sys
model = pickle.loads(sys.stdin.buffer.read())
print(type(model).__module__, type(model).__name__)
"""


def test_a_one_vs_rest_model_saved_again_is_scikit_learns_own_and_still_upgraded():
    """A routine re-saving the upgraded model writes a file any scikit-learn reads, which
    answers as its release did once loaded here again."""
    import numpy as np

    from cpr_function.compat import legacy

    folder = LEGACY / "scikit-learn-0.20.4" / "logistic-regression-liblinear-pkl"
    expected = json.loads((folder / "expected.json").read_text())
    legacy.install()
    with pytest.warns(Warning):  # scikit-learn's own: another release wrote it
        model = pickle.loads((folder / "model.pkl").read_bytes())
    again = pickle.dumps(model)
    plain = subprocess.run(
        [sys.executable, "-c", READ_BACK], input=again, capture_output=True, check=True
    )
    assert plain.stdout.decode().split() == ["sklearn.linear_model._logistic", "LogisticRegression"]
    # It still says which release fitted it: scikit-learn's own warning names it.
    assert "LogisticRegression from version 0.20.4 when using" in plain.stderr.decode()
    with pytest.warns(Warning):
        reloaded = pickle.loads(again)
    proba = reloaded.predict_proba(np.array(expected["instances"]))
    np.testing.assert_allclose(proba, expected["probabilities"], rtol=1e-6)
