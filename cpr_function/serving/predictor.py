"""The predictor contracts users already wrote (AI Platform's, Vertex AI's); finding their class.

Whatever serves a version, it is a servable: `respond(payload, vertex=)` takes
the decoded request body and returns the response body. `Routine` adapts
AI Platform's `predict(instances, **kwargs)`; `VertexRoutine` adapts Vertex AI's
`load / preprocess / predict / postprocess`.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .. import protocol
from ..compat import legacy
from ..compat.shims import PREDICTION_COUNT, Shims
from ..errors import LoadError

log = logging.getLogger(__name__)


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
    """Serves a predictor with AI Platform's `predict(instances, **kwargs)`.

    Whatever `predict` returns is the answer's `predictions`, as on AI Platform,
    even when it is not one prediction per instance (some routines read
    `instances` as one row of feature values). Such a predictor cannot have its
    requests merged or its answers cut into parts: the first time it answers
    another count, `one_per_instance` turns false for good, and the shim is noted.
    """

    def __init__(self, predictor: Any, shims: Shims | None = None):
        self.predictor = predictor
        self.shims = shims
        self.one_per_instance = True
        self._counts_logged: set[tuple[int | None, int]] = set()

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> dict[str, Any]:
        instances, kwargs = protocol.instances_of(payload, vertex=vertex)
        return {"predictions": self.predict(instances, kwargs)}

    def predict(self, instances: list, kwargs: dict[str, Any]) -> Any:
        """What the predictor returns for `instances`, whatever its length."""
        predictions = self.predictor.predict(instances, **kwargs)
        count = _count(predictions)
        if count != len(instances):
            self._not_one_per_instance(count, len(instances), type(predictions).__name__)
        return predictions

    def _not_one_per_instance(self, count: int | None, instances: int, kind: str) -> None:
        got = f"{count} predictions" if count is not None else f"a {kind}, not a list,"
        # Logged once for each pair of counts: a routine that reads instances as one row
        # answers every request so, and one line tells as much as a line a request.
        if (count, instances) not in self._counts_logged and len(self._counts_logged) < 64:
            self._counts_logged.add((count, instances))
            log.warning(
                "%sthe predictor returned %s for %d instances; answered as it is, as AI "
                "Platform did (predict should return one prediction per instance)",
                f"model {self.shims.model} version {self.shims.version}: " if self.shims else "",
                got,
                instances,
            )
        if self.one_per_instance:
            self.one_per_instance = False
            if self.shims is not None:
                self.shims.note(
                    PREDICTION_COUNT,
                    f"predict returned {got} for {instances} instances: its predictions are "
                    "answered as returned, and its requests are never merged or split",
                )


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


def construct(cls: type, model_dir: Path, shims: Shims | None = None) -> Servable:
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
        hint = _keras_hint(exc, model_dir)
        raise LoadError(f"{name}.from_path failed: {legacy.describe(exc)}{hint}") from exc
    if not callable(getattr(predictor, "predict", None)):
        raise LoadError(
            f"{name}.from_path must return an object with "
            f"predict(); it returned {type(predictor).__name__}"
        )
    return Routine(predictor, shims)


def _keras_hint(exc: BaseException, model_dir: Path) -> str:
    """Which Keras wrote the model's files, and what to do, when Keras failed on them."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not any("/keras/" in f.filename or "/tensorflow/" in f.filename for f in frames):
        return ""
    from ..frameworks import keras_files

    found = keras_files.advice(Path(model_dir))
    return f"; {found}" if found else ""


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
