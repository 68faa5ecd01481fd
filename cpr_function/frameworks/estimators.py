"""scikit-learn estimators and XGBoost models, served as AI Platform served them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BadRequest
from ..predictor import Routine


def load(path: Path) -> Routine:
    """Loads `model.bst` (an XGBoost Booster), or a pickled estimator (`.joblib`, `.pkl`)."""
    if path.suffix == ".bst":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return Routine(_Booster(booster))
    if path.suffix == ".joblib":
        import joblib

        return Routine(_Estimator(joblib.load(path)))
    import pickle

    with open(path, "rb") as f:
        return Routine(_Estimator(pickle.load(f)))


def _array(instances: list, features: int | None):
    import numpy

    try:
        array = numpy.asarray(instances)
    except ValueError as exc:
        raise BadRequest(
            f"instances must form a rectangular array, one row of features per instance: {exc}"
        ) from exc
    if features is not None and (array.ndim != 2 or array.shape[1] != features):
        raise BadRequest(
            f"the model takes rows of {features} features; received instances of shape "
            f"{list(array.shape)}"
        )
    return array


class _Estimator:
    """A scikit-learn estimator, or an XGBoost model through its scikit-learn API."""

    # Each row is predicted on its own, so concurrent requests may share a call (batching.py).
    batchable = True

    def __init__(self, model):
        self._model = model

    def predict(self, instances: list, probabilities: bool = False, **kwargs: Any):
        inputs = _array(instances, getattr(self._model, "n_features_in_", None))
        if probabilities:
            if not hasattr(self._model, "predict_proba"):
                raise BadRequest(
                    f"probabilities=true needs a classifier with predict_proba; "
                    f"{type(self._model).__name__} has none"
                )
            return self._model.predict_proba(inputs)
        return self._model.predict(inputs)


class _Booster:
    """An XGBoost Booster saved as `model.bst`."""

    batchable = True

    def __init__(self, booster):
        self._booster = booster

    def predict(self, instances: list, **kwargs: Any):
        import xgboost

        inputs = _array(instances, self._booster.num_features() or None)
        return self._booster.predict(xgboost.DMatrix(inputs))
