"""The predictor contracts users already wrote (AI Platform's, Vertex AI's); finding their class.

Whatever serves a version, it is a servable: `respond(payload, vertex=)` takes
the decoded request body and returns the response body. `Routine` adapts
AI Platform's `predict(instances, **kwargs)`; `VertexRoutine` adapts Vertex AI's
`load / preprocess / predict / postprocess`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from . import legacy, protocol
from .errors import LoadError, PredictorError


@runtime_checkable
class Predictor(Protocol):
    """What AI Platform's custom prediction routines implement; nothing to subclass."""

    def predict(self, instances: list, **kwargs: Any) -> Any:
        """Returns one prediction per instance."""

    @classmethod
    def from_path(cls, model_dir: str) -> Predictor:
        """Loads the artifacts in `model_dir` and returns a ready predictor."""


class VertexPredictor(Protocol):
    """What `google.cloud.aiplatform.prediction.Predictor` subclasses implement."""

    def load(self, artifacts_uri: str) -> None:
        """Loads the artifacts found at `artifacts_uri`."""

    def preprocess(self, prediction_input: Any) -> Any:
        """Turns the request body into the input of `predict`."""

    def predict(self, instances: Any) -> Any:
        """Predicts on what `preprocess` returned."""

    def postprocess(self, prediction_results: Any) -> Any:
        """Turns what `predict` returned into the response body."""


class Servable(Protocol):
    """A loaded version, whatever its kind: a request body in, a response body out."""

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> Any:
        """The response body for a decoded request body."""


class Routine:
    """Serves a predictor with AI Platform's `predict(instances, **kwargs)`."""

    def __init__(self, predictor: Any):
        self.predictor = predictor

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> dict[str, Any]:
        instances, kwargs = protocol.instances_of(payload, vertex=vertex)
        return {"predictions": self.predict(instances, kwargs)}

    def predict(self, instances: list, kwargs: dict[str, Any]) -> Any:
        """The predictor's predictions, checked to be one per instance when they are a sequence.

        Raises:
            PredictorError: the predictor returned another number of predictions.
        """
        predictions = self.predictor.predict(instances, **kwargs)
        count = _count(predictions)
        if count is not None and count != len(instances):
            raise PredictorError(
                f"the predictor returned {count} predictions for {len(instances)} instances; "
                "predict must return one prediction per instance"
            )
        return predictions


class VertexRoutine:
    """Serves a Vertex AI predictor: the whole body to `preprocess`, `postprocess`'s result back."""

    def __init__(self, predictor: Any):
        self.predictor = predictor

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> Any:
        predictor = self.predictor
        # Vertex AI's base class passes both through unchanged; a class need not define them.
        preprocess = getattr(predictor, "preprocess", _same)
        postprocess = getattr(predictor, "postprocess", _same)
        return postprocess(predictor.predict(preprocess(payload)))


def activate(roots: Sequence[Path], provided: Sequence[str]) -> None:
    """Puts package roots first on `sys.path`, in the order the packages were given.

    A module of the same name imported earlier from elsewhere is forgotten, so
    that importing it now finds the package's own code, as it would first on
    the path of a fresh process.
    """
    for root in reversed(roots):
        entry = str(root)
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    for name in provided:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) or ""
        if module is not None and not any(origin.startswith(str(r)) for r in roots):
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                del sys.modules[loaded]
    importlib.invalidate_caches()


def resolve(class_path: str, provided: Sequence[str]) -> type:
    """Imports `module.Class` and checks it looks like a predictor.

    Args:
        class_path: the `--prediction-class` value.
        provided: top-level modules the packages ship, named in errors.

    Raises:
        LoadError: the module or class is missing, fails to import, or lacks
            `from_path` and `predict`.
    """
    module_name, _, class_name = class_path.rpartition(".")
    shipped = ", ".join(provided) or "none"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LoadError(
                f"prediction class {class_path}: no module named {module_name!r}; the packages "
                f"provide the top-level modules: {shipped}"
            ) from exc
        raise _import_failed(class_path, exc) from exc
    except (Exception, SystemExit) as exc:
        raise _import_failed(class_path, exc) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        found = ", ".join(n for n, v in vars(module).items() if isinstance(v, type)) or "none"
        raise LoadError(
            f"prediction class {class_path}: module {module_name!r} has no attribute "
            f"{class_name!r}; classes it defines: {found}"
        )
    if _is_vertex(cls):
        return cls
    missing = [m for m in ("from_path", "predict") if not callable(getattr(cls, m, None))]
    if missing:
        raise LoadError(
            f"prediction class {class_path} must define from_path(model_dir) and "
            f"predict(instances, **kwargs) as AI Platform's predictors do, or load(artifacts_uri) "
            f"and predict(instances) as Vertex AI's do; it lacks {' and '.join(missing)}"
        )
    return cls


def _is_vertex(cls: type) -> bool:
    """Vertex AI's predictors load with `load`; AI Platform's with the class method `from_path`."""
    has = {m for m in ("from_path", "load", "predict") if callable(getattr(cls, m, None))}
    return has == {"load", "predict"}


def _import_failed(class_path: str, exc: BaseException) -> LoadError:
    return LoadError(f"importing prediction class {class_path} failed: {legacy.describe(exc)}")


def construct(cls: type, model_dir: Path) -> Servable:
    """Builds the user's predictor: `from_path(model_dir)`, or for a Vertex AI
    predictor `cls()` then `load(model_dir)`.

    Raises:
        LoadError: loading raised, or `from_path` returned something without `predict`.
    """
    name = f"{cls.__module__}.{cls.__qualname__}"
    if _is_vertex(cls):
        try:
            predictor = cls()
            predictor.load(str(model_dir))
        except (Exception, SystemExit) as exc:
            raise LoadError(f"{name}.load failed: {legacy.describe(exc)}") from exc
        return VertexRoutine(predictor)
    try:
        predictor = cls.from_path(str(model_dir))
    except (Exception, SystemExit) as exc:
        raise LoadError(f"{name}.from_path failed: {legacy.describe(exc)}") from exc
    if not callable(getattr(predictor, "predict", None)):
        raise LoadError(
            f"{name}.from_path must return an object with "
            f"predict(); it returned {type(predictor).__name__}"
        )
    return Routine(predictor)


def _count(predictions: Any) -> int | None:
    """How many predictions a list, tuple, array or pandas object holds; None for other values."""
    if isinstance(predictions, list | tuple):
        return len(predictions)
    shape = getattr(predictions, "shape", None)
    if isinstance(shape, tuple) and shape:
        return shape[0]
    return None


def _same(value: Any) -> Any:
    """Vertex AI's default `preprocess` and `postprocess`."""
    return value
