"""AI Platform's runtime behaviours that real routines rely on, through a real function process.

Each routine here is shaped like public custom prediction routines that ran on AI
Platform and failed here before: its package and model are uploaded to the storage
emulator, and it is called with the client its authors used (`googleapiclient`'s `ml`
v1), or plain HTTP where the point is concurrency.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import FaultProxy, make_tar, ml_v1, upload_dir, upload_file

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
