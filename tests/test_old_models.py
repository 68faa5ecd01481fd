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
    from cpr_function import legacy

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
        wanted = ["loading model.bst as a xgboost model failed: XGBoostError: "]
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
