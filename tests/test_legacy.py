"""2019-era prediction code runs unchanged, or fails saying exactly what to change."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
from conftest import IRIS, iris_expected, make_tar

LEGACY_PREDICTOR = """
import base64
import collections
import importlib
import inspect
import os
import pickle
import sys
import time
from collections import Mapping

import numpy as np
from sklearn.externals import joblib


class LegacyPredictor(object):
    def __init__(self, model, forest):
        self._model = model
        self._forest = forest

    @classmethod
    def from_path(cls, model_dir):
        started = time.clock()
        inspect.getargspec(cls.__init__)
        base64.encodestring(b"runtime 1.14")
        model = joblib.load(os.path.join(model_dir, 'model.joblib'))
        with open(os.path.join(model_dir, 'old_forest.pkl'), 'rb') as f:
            forest = pickle.load(f)
        # Old joblib pickles name classes under sklearn.externals.joblib: they must be
        # the very classes joblib checks against, not a second copy of the module.
        numpy_pickle = importlib.import_module('sklearn.externals.joblib.numpy_pickle')
        if numpy_pickle is not sys.modules['joblib.numpy_pickle']:
            raise RuntimeError('sklearn.externals.joblib.numpy_pickle is a second copy')
        assert time.clock() >= started
        return cls(model, forest)

    def predict(self, instances, **kwargs):
        assert isinstance(kwargs, Mapping)
        inputs = np.asarray(instances, dtype=np.float)
        labels = self._model.predict(inputs).astype(np.int)
        return [{"label": int(l), "forest": int(f)}
                for l, f in zip(labels, self._forest.predict(inputs))]
"""


@pytest.fixture(scope="module")
def legacy_model_dir(tmp_path_factory, iris_dir):
    """The iris model plus a pickle naming `sklearn.ensemble.forest`, as scikit-learn 0.20 wrote."""
    folder = tmp_path_factory.mktemp("legacy")
    code = (
        "import pickle, sys; from sklearn.datasets import load_iris;"
        "from sklearn.ensemble import RandomForestClassifier;"
        "x, y = load_iris(return_X_y=True);"
        "m = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y);"
        "sys.stdout.buffer.write(pickle.dumps(m, protocol=2))"
    )
    modern = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    old = modern.replace(b"sklearn.ensemble._forest\n", b"sklearn.ensemble.forest\n")
    assert old != modern, "the pickle must name the pre-0.22 module"
    (folder / "old_forest.pkl").write_bytes(old)
    (folder / "model.joblib").write_bytes((iris_dir / "model.joblib").read_bytes())
    return folder


def _serve(function, tmp_path, model_dir, source: str, **env):
    archive = make_tar(
        tmp_path / "legacy-0.1.tar.gz",
        {
            "legacy-0.1/setup.py": "from setuptools import setup\n"
            "setup(name='legacy', version='0.1', scripts=['predictor.py'])\n",
            "legacy-0.1/predictor.py": source,
        },
    )
    return function(
        {
            "CPR_ORIGIN": str(model_dir),
            "CPR_PACKAGE_URIS": str(archive),
            "CPR_PREDICTION_CLASS": "predictor.LegacyPredictor",
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
            **env,
        }
    )


def test_runtime_1_x_code_runs_unchanged(function, tmp_path, legacy_model_dir, iris_dir):
    fn = _serve(function, tmp_path, legacy_model_dir, LEGACY_PREDICTOR)
    answer = fn.predict({"instances": IRIS})
    assert answer.status_code == 200, answer.text
    with open(legacy_model_dir / "old_forest.pkl", "rb") as f:
        forest = pickle.loads(
            f.read().replace(b"sklearn.ensemble.forest\n", b"sklearn.ensemble._forest\n")
        )
    labels = iris_expected(iris_dir, IRIS, centered=False)
    assert answer.json()["predictions"] == [
        {"label": label, "forest": int(f)}
        for label, f in zip(labels, forest.predict(IRIS), strict=True)
    ]


def test_without_the_compatibility_layer_the_same_code_fails(function, tmp_path, legacy_model_dir):
    fn = _serve(function, tmp_path, legacy_model_dir, LEGACY_PREDICTOR, CPR_LEGACY_COMPAT="false")
    answer = fn.predict({"instances": IRIS})
    assert answer.status_code == 500
    assert "cannot import name 'Mapping' from 'collections'" in answer.json()["error"]


@pytest.mark.parametrize(
    "source,message",
    [
        (
            "import xgboost_0_82_custom\n",
            "module 'xgboost_0_82_custom' is not installed; add the package that provides it to "
            "CPR_PACKAGE_URIS or requirements.txt, or set CPR_INSTALL_DEPENDENCIES=true",
        ),
        ("print 'loading'\n", "line 1 is not valid Python 3"),
    ],
)
def test_what_cannot_run_says_what_to_change(function, tmp_path, legacy_model_dir, source, message):
    fn = _serve(function, tmp_path, legacy_model_dir, source)
    answer = fn.predict({"instances": IRIS})
    assert answer.status_code == 500
    assert answer.json()["error"].startswith("importing prediction class predictor.LegacyPredictor")
    assert message in answer.json()["error"]


# Old module paths (scikit-learn 0.20/0.21) and a class each must hold when imported again.
OLD_PATHS = {
    "sklearn.tree.tree": "DecisionTreeClassifier",
    "sklearn.ensemble.forest": "RandomForestClassifier",
    "sklearn.ensemble.gradient_boosting": "GradientBoostingClassifier",
    "sklearn.ensemble.weight_boosting": "AdaBoostClassifier",
    "sklearn.linear_model.logistic": "LogisticRegression",
    "sklearn.linear_model.stochastic_gradient": "SGDClassifier",
    "sklearn.preprocessing.data": "StandardScaler",
    "sklearn.preprocessing.label": "LabelEncoder",
    "sklearn.svm.classes": "SVC",
    "sklearn.neighbors.classification": "KNeighborsClassifier",
    "sklearn.cluster.k_means_": "KMeans",
    "sklearn.cluster.dbscan_": "DBSCAN",
    "sklearn.cluster.hierarchical": "FeatureAgglomeration",
    "sklearn.cluster.affinity_propagation_": "AffinityPropagation",
    "sklearn.cluster.mean_shift_": "MeanShift",
    "sklearn.cluster.optics_": "OPTICS",
    "sklearn.covariance.empirical_covariance_": "EmpiricalCovariance",
    "sklearn.covariance.shrunk_covariance_": "ShrunkCovariance",
    "sklearn.covariance.graph_lasso_": "GraphicalLasso",
    "sklearn.cross_decomposition.cca_": "CCA",
    "sklearn.cross_decomposition.pls_": "PLSSVD",
    "sklearn.decomposition.fastica_": "FastICA",
    "sklearn.decomposition.online_lda": "LatentDirichletAllocation",
    "sklearn.decomposition.pca": "PCA",
    "sklearn.feature_extraction.hashing": "FeatureHasher",
    "sklearn.manifold.spectral_embedding_": "SpectralEmbedding",
    "sklearn.neural_network.multilayer_perceptron": "MLPClassifier",
}


@pytest.mark.parametrize("old,holds", OLD_PATHS.items())
def test_every_module_path_scikit_learn_made_private_imports_its_classes(old, holds):
    import importlib

    from cpr_function.compat import legacy

    legacy.install()
    assert hasattr(importlib.import_module(old), holds)


def test_a_tree_pickled_under_sklearn_tree_tree_is_served(function, tmp_path):
    # Before 0.22 a decision tree pickled as sklearn.tree.tree.DecisionTreeClassifier; the
    # fallback to sklearn.tree._tree (the Cython module) does not hold it.
    code = (
        "import pickle, sys; from sklearn.datasets import load_iris;"
        "from sklearn.tree import DecisionTreeClassifier;"
        "x, y = load_iris(return_X_y=True);"
        "m = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y);"
        "sys.stdout.buffer.write(pickle.dumps(m, protocol=2))"
    )
    modern = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    old = modern.replace(b"sklearn.tree._classes\n", b"sklearn.tree.tree\n")
    assert old != modern
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.pkl").write_bytes(old)
    fn = function({"CPR_ORIGIN": str(tmp_path / "model"), "CPR_CACHE_DIR": str(tmp_path / "c")})
    answer = fn.predict({"instances": IRIS})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == pickle.loads(modern).predict(IRIS).tolist()
    shims = [s["detail"] for s in fn.version_status()["compatibility"]]
    assert "sklearn.tree.tree (gone from today's libraries) is sklearn.tree._classes" in shims
