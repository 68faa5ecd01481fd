"""Built-in predictors for framework models served without custom code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BadRequest, LoadError

# The files AI Platform looked for, per framework, in order of preference.
WELLKNOWN_MODEL_FILENAMES = {
    "scikit-learn": ("model.joblib", "model.pkl"),
    "xgboost": ("model.bst", "model.joblib", "model.pkl"),
    "tensorflow": ("saved_model.pb",),
    "mlflow": ("MLmodel",),
}
SERVED = ("scikit-learn", "xgboost")


def detect(model_dir: Path) -> str:
    """Names the framework whose model file is in `model_dir`.

    Raises:
        LoadError: no known model file is there; the message lists what is.
    """
    present = {p.name for p in model_dir.iterdir()}
    for framework in ("mlflow", "tensorflow", "xgboost", "scikit-learn"):
        if present & set(WELLKNOWN_MODEL_FILENAMES[framework][:1]):
            return framework
    if present & {"model.joblib", "model.pkl"}:
        return "scikit-learn"
    expected = "; ".join(f"{f}: {', '.join(n)}" for f, n in WELLKNOWN_MODEL_FILENAMES.items())
    raise LoadError(
        f"no model file found to serve without CPR_PREDICTION_CLASS; files found: "
        f"{', '.join(sorted(present)) or 'none'}; expected per framework: {expected}"
    )


class _Estimator:
    """A scikit-learn estimator, or an XGBoost model through its scikit-learn API."""

    def __init__(self, model):
        self._model = model

    def predict(self, instances: list, probabilities: bool = False, **kwargs: Any):
        import numpy

        try:
            inputs = numpy.asarray(instances)
        except ValueError as exc:
            raise BadRequest(f"instances must form a rectangular array of numbers: {exc}") from exc
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

    def __init__(self, booster):
        self._booster = booster

    def predict(self, instances: list, **kwargs: Any):
        import numpy
        import xgboost

        return self._booster.predict(xgboost.DMatrix(numpy.asarray(instances)))


def load(model_dir: Path, framework: str | None):
    """Loads a framework model from `model_dir`, detecting the framework when unset.

    Raises:
        LoadError: the framework is not served, or its model file is missing or unreadable.
    """
    framework = framework or detect(model_dir)
    if framework not in SERVED:
        raise LoadError(
            f"framework {framework} models cannot be served without CPR_PREDICTION_CLASS yet; "
            f"served frameworks: {', '.join(SERVED)}"
        )
    names = WELLKNOWN_MODEL_FILENAMES[framework]
    path = next((model_dir / n for n in names if (model_dir / n).is_file()), None)
    if path is None:
        raise LoadError(
            f"framework {framework} expects one of {', '.join(names)} in the model directory; "
            f"files found: {', '.join(sorted(p.name for p in model_dir.iterdir())) or 'none'}"
        )
    try:
        if path.suffix == ".bst":
            import xgboost

            booster = xgboost.Booster()
            booster.load_model(str(path))
            return _Booster(booster)
        if path.suffix == ".joblib":
            import joblib

            return _Estimator(joblib.load(path))
        import pickle

        with open(path, "rb") as f:
            return _Estimator(pickle.load(f))
    except Exception as exc:
        raise LoadError(
            f"loading {path.name} as a {framework} model failed: {type(exc).__name__}: {exc}"
        ) from exc
