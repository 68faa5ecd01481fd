"""AI Platform's runtime behaviours that real routines rely on, through a real function process.

Each routine here is shaped like public custom prediction routines that ran on AI
Platform and failed here before: its package and model are uploaded to the storage
emulator, and it is called with the client its authors used (`googleapiclient`'s `ml`
v1), or plain HTTP where the point is concurrency.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import FaultProxy, make_tar, ml_v1, upload_dir, upload_file
from sklearn.base import BaseEstimator

# A churn routine that reads `instances` as one customer's row of values, the way some
# routines built `pd.DataFrame([instances], columns=...)`, so a request holding one
# customer's 20 values gets one prediction. And a routine answering one number per call.
ROUTINES = '''
import os

import joblib
import pandas as pd

COLUMNS = ["f%02d" % i for i in range(20)]


class ChurnPredictor(object):
    def __init__(self, model):
        self._model = model

    @classmethod
    def from_path(cls, model_dir):
        return cls(joblib.load(os.path.join(model_dir, "model.joblib")))

    def predict(self, instances, **kwargs):
        customer = pd.DataFrame([instances], columns=COLUMNS)
        return self._model.predict_proba(customer)[:, 1].tolist()


class Total(object):
    """One number for the whole call; a call of one instance looks like one per instance."""

    @classmethod
    def from_path(cls, model_dir):
        return cls()

    def predict(self, instances, **kwargs):
        import time

        time.sleep(0.05)  # long enough for concurrent requests to queue behind a call
        return [sum(instances)]
'''

COLUMNS = [f"f{i:02d}" for i in range(20)]


@pytest.fixture(scope="module")
def churn(tmp_path_factory, module_bucket):
    """The churn model (trained here on a DataFrame) and the routines' package, in the bucket."""
    import joblib
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    tmp = tmp_path_factory.mktemp("churn")
    rng = np.random.default_rng(3)
    features = pd.DataFrame(rng.normal(size=(200, 20)), columns=COLUMNS)
    model = LogisticRegression().fit(features, features["f00"] + features["f07"] > 0)
    (tmp / "model").mkdir()
    joblib.dump(model, tmp / "model" / "model.joblib")
    package = make_tar(tmp / "churn-0.1.tar.gz", {"churn-0.1/churn.py": ROUTINES})
    return {
        "model": model,
        "origin": upload_dir(module_bucket, tmp / "model", "churn/model"),
        "package": upload_file(module_bucket, package, "churn/churn-0.1.tar.gz"),
    }


def _customer(seed: int) -> list[float]:
    return [round(v, 3) for v in np.random.default_rng(seed).normal(size=20).tolist()]


def test_a_routine_reading_instances_as_one_row_is_answered_as_it_was(function, churn, tmp_path):
    fn = function(
        {
            "CPR_ORIGIN": churn["origin"],
            "CPR_PACKAGE_URIS": churn["package"],
            "CPR_PREDICTION_CLASS": "churn.ChurnPredictor",
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
        }
    )
    import pandas as pd

    customer = _customer(1)
    expected = churn["model"].predict_proba(pd.DataFrame([customer], columns=COLUMNS))[:, 1]
    name = "projects/p/models/default/versions/v1"
    with ml_v1(fn.url) as ml:
        answer = ml.projects().predict(name=name, body={"instances": customer}).execute()
    assert answer["predictions"] == pytest.approx(expected.tolist(), rel=1e-12)
    assert len(answer["predictions"]) == 1
    assert "the predictor returned 1 predictions for 20 instances" in fn.log()
    (shim,) = fn.version_status()["compatibility"]
    assert shim["shim"] == "prediction count"
    assert "returned 1 predictions for 20 instances" in shim["detail"]


@pytest.mark.parametrize("isolation", ["none", "process"])
def test_merged_requests_never_get_each_others_predictions(function, churn, tmp_path, isolation):
    # Alone, Total answers [x] for [x]; merged, it would answer one sum for several requests.
    fn = function(
        {
            "CPR_ORIGIN": churn["origin"],
            "CPR_PACKAGE_URIS": churn["package"],
            "CPR_PREDICTION_CLASS": "churn.Total",
            "CPR_MICROBATCH": "all",
            "CPR_ISOLATION": isolation,
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
        },
        threads=16,
    )
    assert fn.predict({"instances": [0]}).json() == {"predictions": [0]}  # loaded, looks right
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda n: fn.predict({"instances": [n]}), range(1, 33)))
    assert [a.json() for a in answers] == [{"predictions": [n]} for n in range(1, 33)]
    status = fn.version_status()
    assert status["microbatch"]["merging"] is False
    assert [s["shim"] for s in status["compatibility"]] == ["prediction count"]
    assert "each request is predicted alone, now and from now on" in fn.log()
    # From then on requests go alone: a further burst makes no merged call.
    calls = status["microbatch"]["calls"]
    with ThreadPoolExecutor(8) as pool:
        later = list(pool.map(lambda n: fn.predict({"instances": [n]}), range(8)))
    assert [a.json() for a in later] == [{"predictions": [n]} for n in range(8)]
    assert fn.version_status()["microbatch"]["calls"] == calls


def test_forwarding_to_a_model_answering_per_call_sends_requests_whole(function, churn, tmp_path):
    upstream = function(
        {
            "CPR_ORIGIN": churn["origin"],
            "CPR_PACKAGE_URIS": churn["package"],
            "CPR_PREDICTION_CLASS": "churn.Total",
            "CPR_MODEL_NAME": "totals",
            "CPR_CACHE_DIR": str(tmp_path / "upstream-cache"),
        }
    )
    counting = FaultProxy(upstream.url)
    try:
        fn = function(
            {
                "CPR_FORWARD_TO": "projects/p/models/totals",
                "CPR_API_ENDPOINT": counting.url,
                "CPR_BATCH_SIZE": "2",
            }
        )
        direct = upstream.predict({"instances": [1, 2, 3, 4, 5]})
        assert direct.json() == {"predictions": [15]}
        # Split in three, its batches answer [3], [7], [5]: they cannot be joined, so the
        # request goes again whole, and from then on every request does.
        assert fn.predict({"instances": [1, 2, 3, 4, 5]}).json() == direct.json()
        assert counting.batches[-1] == 5
        sent = len(counting.batches)
        assert fn.predict({"instances": [1, 2, 3]}).json() == {"predictions": [6]}
        assert counting.batches[sent:] == [3]
        assert "go whole" in fn.log()
        (shim,) = fn.version_status()["compatibility"]
        assert shim["shim"] == "prediction count"
    finally:
        counting.close()


def test_a_framework_named_by_the_v1_enum_serves_and_is_reported(function, churn, tmp_path):
    # Google's sample scripts deployed with --framework SCIKIT_LEARN; versions describe says so.
    fn = function(
        {
            "CPR_ORIGIN": churn["origin"],
            "CPR_FRAMEWORK": "SCIKIT_LEARN",
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
        }
    )
    customers = [_customer(n) for n in range(3)]
    body = {"instances": customers}
    with ml_v1(fn.url) as ml:
        answer = ml.projects().predict(name="projects/p/models/default", body=body).execute()
        name = "projects/p/models/default/versions/v1"
        version = ml.projects().models().versions().get(name=name).execute()
    import pandas as pd

    expected = churn["model"].predict(pd.DataFrame(customers, columns=COLUMNS))
    assert answer["predictions"] == expected.tolist()
    assert version["framework"] == "SCIKIT_LEARN"
    (shim,) = fn.version_status()["compatibility"]
    assert shim == {"shim": "framework spelling", "detail": "'SCIKIT_LEARN' read as scikit-learn"}
    assert "compatibility shim (framework spelling)" in fn.log()


# A census routine in the shape of AI Platform's scikit-learn pipeline samples: custom
# transformers that keep what fit learnt in attributes without a trailing underscore
# (`self.values`), served both as a framework model with the package and by a predictor
# that unpickles the pipeline itself. scikit-learn 0.20 never asked if a step was fitted.
TRANSFORMS = """
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class PositionalSelector(BaseEstimator, TransformerMixin):
    def __init__(self, positions, numbers=False):
        self.positions = positions
        self.numbers = numbers

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        picked = np.asarray(X, dtype=object)[:, self.positions]
        return picked.astype(float) if self.numbers else picked


class StripString(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.vectorize(lambda v: str(v).strip())(X)


class SimpleOneHotEncoder(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        self.values = [sorted(set(X[:, c])) for c in range(X.shape[1])]
        return self

    def transform(self, X):
        columns = []
        for c, known in enumerate(self.values):
            columns.append(np.array([[v == k for k in known] for v in X[:, c]], dtype=float))
        return np.hstack(columns)
"""

PREDICTOR = """
import os
import pickle

import numpy as np


class CensusPredictor(object):
    def __init__(self, model):
        self._model = model

    @classmethod
    def from_path(cls, model_dir):
        with open(os.path.join(model_dir, "model.pkl"), "rb") as f:
            return cls(pickle.load(f))

    def predict(self, instances, **kwargs):
        return self._model.predict_proba(np.asarray(instances, dtype=object)).tolist()
"""

TRAIN = """
import json, pickle, sys
import joblib
import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler
sys.path.insert(0, sys.argv[1])
from custom_transforms import PositionalSelector, SimpleOneHotEncoder, StripString

rng = np.random.default_rng(5)
jobs, schools = [" Private", " State-gov", " Self-emp"], [" Bachelors", " HS-grad"]
rows = [[int(rng.integers(18, 80)), int(rng.integers(10, 60)), str(rng.choice(jobs)),
         str(rng.choice(schools))] for _ in range(300)]
labels = [(r[0] > 40) != (r[3] == " HS-grad") for r in rows]
numeric = Pipeline([("select", PositionalSelector([0, 1], numbers=True)),
                    ("scale", StandardScaler())])
categorical = Pipeline([("select", PositionalSelector([2, 3])), ("strip", StripString()),
                        ("encode", SimpleOneHotEncoder())])
model = Pipeline([("union", FeatureUnion([("numeric", numeric), ("categorical", categorical)])),
                  ("classifier", GradientBoostingClassifier(n_estimators=20, random_state=0))])
model.fit(np.asarray(rows, dtype=object), labels)
joblib.dump(model, sys.argv[2] + "/model.joblib")
with open(sys.argv[2] + "/model.pkl", "wb") as f:
    pickle.dump(model, f)
# What the fitted pipeline predicts, asked as scikit-learn 0.20 would have: unchecked.
for cls in (SimpleOneHotEncoder, StripString, PositionalSelector):
    cls.__sklearn_is_fitted__ = lambda self: True
instances = rows[:4]
expected = {"instances": instances,
            "classes": model.predict(np.asarray(instances, dtype=object)).tolist(),
            "probabilities": model.predict_proba(np.asarray(instances, dtype=object)).tolist()}
print(json.dumps(expected))
"""


@pytest.fixture(scope="module")
def census(tmp_path_factory, module_bucket):
    """The census pipeline, pickled where its package's module is importable, in the bucket."""
    import json
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("census")
    source = tmp / "source"
    source.mkdir()
    (source / "custom_transforms.py").write_text(TRANSFORMS)
    (tmp / "model").mkdir()
    trained = subprocess.run(
        [sys.executable, "-c", TRAIN, str(source), str(tmp / "model")],
        check=True,
        capture_output=True,
        text=True,
    )
    setup = "from setuptools import setup\nsetup(name='census', version='0.1', "
    setup += "scripts=['custom_transforms.py', 'predictor.py'])\n"
    files = {
        "census-0.1/setup.py": setup,
        "census-0.1/custom_transforms.py": TRANSFORMS,
        "census-0.1/predictor.py": PREDICTOR,
    }
    package = make_tar(tmp / "census-0.1.tar.gz", files)
    return {
        **json.loads(trained.stdout),
        "origin": upload_dir(module_bucket, tmp / "model", "census/model"),
        "package": upload_file(module_bucket, package, "census/census-0.1.tar.gz"),
    }


@pytest.mark.parametrize(
    "served",
    [
        {"CPR_FRAMEWORK": "SCIKIT_LEARN"},  # model.joblib, no prediction class
        {"CPR_PREDICTION_CLASS": "predictor.CensusPredictor"},  # unpickles model.pkl itself
    ],
    ids=["framework", "routine"],
)
def test_a_pipeline_of_custom_steps_predicts_as_it_did(function, census, tmp_path, served):
    settings = {
        "CPR_ORIGIN": census["origin"],
        "CPR_PACKAGE_URIS": census["package"],
        "CPR_CACHE_DIR": str(tmp_path / "cache"),
        **served,
    }
    fn = function(settings)
    body = {"instances": census["instances"]}
    with ml_v1(fn.url) as ml:
        answer = ml.projects().predict(name="projects/p/models/default", body=body).execute()
    wanted = census["classes"] if "CPR_FRAMEWORK" in served else census["probabilities"]
    np.testing.assert_allclose(np.asarray(answer["predictions"], float), wanted, rtol=1e-9)
    shims = fn.version_status()["compatibility"]
    fitted = {s["detail"].split()[0]: s["detail"] for s in shims if s["shim"] == "fitted check"}
    assert sorted(fitted) == [
        "custom_transforms.PositionalSelector",
        "custom_transforms.SimpleOneHotEncoder",
        "custom_transforms.StripString",
    ]
    assert "(its attributes: values)" in fitted["custom_transforms.SimpleOneHotEncoder"]
    assert "compatibility shim (fitted check)" in fn.log()
    # Without the compatibility layer, today's scikit-learn refuses the fitted pipeline.
    bare = function({**settings, "CPR_LEGACY_COMPAT": "false"})
    refused = bare.predict(body)
    assert refused.status_code == 500
    assert "NotFittedError: This Pipeline instance is not fitted yet" in refused.json()["error"]


def test_check_reports_each_shim_a_model_needs(census, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    run = subprocess.run(
        [sys.executable, "-m", "cpr_function", "check", "--model-dir", census["origin"]]
        + ["--package-uris", census["package"], "--framework", "SCIKIT_LEARN"]
        + ["--instance", json.dumps(census["instances"][0])]
        + ["--cache-dir", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert "  shim framework spelling: 'SCIKIT_LEARN' read as scikit-learn" in lines
    fitted = [line.split()[3] for line in lines if line.startswith("  shim fitted check: ")]
    assert sorted(fitted) == [f"custom_transforms.{n}" for n in ("PositionalSelector",
        "SimpleOneHotEncoder", "StripString")]  # fmt: skip
    assert [line.split()[:2] for line in lines if line.startswith("  ok ")][-1] == ["ok", "predict"]


class _Kept(BaseEstimator):
    """Keeps what fit learnt in an attribute without a trailing underscore."""

    def fit(self, X=None, y=None):
        self.values = [1, 2]
        return self


def test_only_unpickled_estimators_from_outside_scikit_learn_are_declared_fitted():
    import pickle

    from sklearn.exceptions import NotFittedError
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils.validation import check_is_fitted

    from cpr_function.compat import unpickling

    unpickling.install()
    built = _Kept().fit()
    with pytest.raises(NotFittedError):
        check_is_fitted(built)  # built in this process: scikit-learn's rule, untouched
    loaded = pickle.loads(pickle.dumps(built))
    check_is_fitted(loaded)
    assert loaded.values == [1, 2] and loaded.get_params() == {}
    again = pickle.loads(pickle.dumps(loaded))  # a declared estimator pickles again
    check_is_fitted(again)
    with pytest.raises(NotFittedError):
        check_is_fitted(pickle.loads(pickle.dumps(StandardScaler())))  # scikit-learn's own


# Names removed since 2019 that real routines used: pandas' as_matrix and pd.np, NumPy 2's
# float_ and NaN, NumPy 1.23's asscalar.
OLD_NAMES = """
import numpy as np
import pandas as pd


class Scorer(object):
    @classmethod
    def from_path(cls, model_dir):
        return cls()

    def predict(self, instances, **kwargs):
        rows = pd.DataFrame(instances).as_matrix().astype(np.float_)
        rows[np.isnan(rows)] = pd.np.NaN
        return [np.asscalar(row.sum()) for row in rows]
"""


def test_names_removed_since_2019_are_served_and_reported(function, module_bucket, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "README").write_text("nothing to load")
    package = make_tar(tmp_path / "scorer-0.1.tar.gz", {"scorer-0.1/scorer.py": OLD_NAMES})
    settings = {
        "CPR_ORIGIN": upload_dir(module_bucket, model, "scorer/model"),
        "CPR_PACKAGE_URIS": upload_file(module_bucket, package, "scorer/scorer-0.1.tar.gz"),
        "CPR_PREDICTION_CLASS": "scorer.Scorer",
        "CPR_CACHE_DIR": str(tmp_path / "cache"),
    }
    fn = function(settings)
    answer = fn.predict({"instances": [[1, 2.5], [3, 4]]})
    assert answer.json() == {"predictions": [3.5, 7.0]}
    noted = [s["detail"] for s in fn.version_status()["compatibility"]]
    assert noted == [
        "DataFrame.as_matrix (removed in pandas 1.0) is .values",
        "numpy.float_ (removed in NumPy 2.0) is numpy.float64",
        "pandas.np (removed in pandas 2.0) is numpy",
        "numpy.NaN (removed in NumPy 2.0) is numpy.nan",
        "numpy.asscalar (removed in NumPy 1.23) is array.item()",
    ]
    # Without the compatibility layer the first of them fails, as it does on today's pandas.
    bare = function({**settings, "CPR_LEGACY_COMPAT": "false"})
    refused = bare.predict({"instances": [[1, 2.5]]})
    assert refused.status_code == 500
    assert "'DataFrame' object has no attribute 'as_matrix'" in refused.json()["error"]


def test_a_name_that_was_never_there_is_still_an_attribute_error():
    import numpy

    from cpr_function.compat import legacy

    legacy.install()
    assert numpy.float_ is numpy.float64
    with pytest.raises(AttributeError, match="has no attribute 'float128_never'"):
        numpy.float128_never  # noqa: B018
    with pytest.raises(AttributeError, match="module 'time' has no attribute 'tick'"):
        import time

        time.tick  # noqa: B018
