"""Framework models served without custom code: finding the framework, and loading its model.

One small adapter module per framework (`estimators` for scikit-learn and
XGBoost, `savedmodel` for TensorFlow, `pyfunc` for MLflow), each imported only
when a model of its kind is loaded.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from ..compat import provenance
from ..errors import LoadError
from ..predictor import Servable

log = logging.getLogger(__name__)

# The files each framework's model is saved as, in order of preference.
WELLKNOWN_MODEL_FILENAMES = {
    "scikit-learn": ("model.joblib", "model.pkl"),
    "xgboost": ("model.bst", "model.joblib", "model.pkl"),
    "tensorflow": ("saved_model.pb",),
    "mlflow": ("MLmodel",),
}
_ADAPTERS = {
    "scikit-learn": "estimators",
    "xgboost": "estimators",
    "tensorflow": "savedmodel",
    "mlflow": "pyfunc",
}
# The packages each adapter imports: missing, they are for requirements.txt. Any other
# module missing while loading is one the model file names.
_RUNTIMES = {
    "scikit-learn": {"sklearn", "joblib"},
    "xgboost": {"xgboost", "sklearn", "joblib"},
    "tensorflow": {"tensorflow"},
    "mlflow": {"mlflow"},
}
# Which framework a file names when the framework is not configured; first found wins.
_DETECTED_BY = (
    ("MLmodel", "mlflow"),
    ("saved_model.pb", "tensorflow"),
    ("model.bst", "xgboost"),
    ("model.joblib", "scikit-learn"),
    ("model.pkl", "scikit-learn"),
)


def detect(model_dir: Path) -> str:
    """Names the framework whose model file is in `model_dir`.

    Raises:
        LoadError: no known model file is there; the message lists the files
            found and the files each framework expects.
    """
    present = _files(model_dir)
    for filename, framework in _DETECTED_BY:
        if filename in present:
            return framework
    raise LoadError(
        "no model file found to serve without CPR_PREDICTION_CLASS; "
        f"files found in the model directory: {_listing(present)}; expected per framework: "
        + "; ".join(f"{f}: {' or '.join(n)}" for f, n in WELLKNOWN_MODEL_FILENAMES.items())
    )


def declares_batchable(framework: str | None) -> bool:
    """Whether every predictor `framework`'s models load as says `batchable = True`, known
    before any model is loaded: the scikit-learn and XGBoost adapters do. False when the
    framework is not named (only the model's files would tell) or its adapter does not."""
    if framework not in _ADAPTERS:
        return False
    adapter = importlib.import_module(f"{__name__}.{_ADAPTERS[framework]}")
    classes = getattr(adapter, "predictor_classes", tuple)()
    return bool(classes) and all(getattr(c, "batchable", False) is True for c in classes)


def load(model_dir: Path, framework: str | None) -> Servable:
    """Loads a framework model from `model_dir`, detecting the framework when unset.

    Raises:
        LoadError: the framework's model file is missing, or cannot be loaded.
    """
    framework = framework or detect(model_dir)
    names = WELLKNOWN_MODEL_FILENAMES[framework]
    path = next((model_dir / n for n in names if (model_dir / n).is_file()), None)
    if path is None:
        raise LoadError(
            f"framework {framework} expects {' or '.join(names)} in the model directory; "
            f"files found: {_listing(_files(model_dir))}"
        )
    adapter = importlib.import_module(f"{__name__}.{_ADAPTERS[framework]}")
    try:
        loaded = adapter.load(path)
        provenance.note_writer(path)
        return loaded
    except LoadError:
        raise
    except ImportError as exc:
        if exc.name not in _RUNTIMES[framework]:
            raise LoadError(provenance.load_failed(framework, path, exc)) from exc
        raise LoadError(
            f"serving a {framework} model needs the {exc.name or framework} package, which is "
            f"not installed: add it to requirements.txt (requirements-frameworks.txt lists "
            f"the tested releases)"
        ) from exc
    except Exception as exc:
        # The whole error, a native stack included, for the log; the message has its first line.
        log.info("loading %s as a %s model failed", path, framework, exc_info=exc)
        raise LoadError(provenance.load_failed(framework, path, exc)) from exc


def _files(model_dir: Path) -> list[str]:
    """The model directory's files, relative to it, directories marked with a slash."""
    return sorted(
        p.relative_to(model_dir).as_posix() + ("/" if p.is_dir() else "")
        for p in model_dir.iterdir()
    )


def _listing(files: list[str], limit: int = 20) -> str:
    if not files:
        return "none (the directory is empty)"
    shown = ", ".join(files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")
