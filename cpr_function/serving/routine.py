"""A user's routine: its packages put first on the path, its predictor class imported and
checked, and constructed from the model directory as AI Platform or Vertex AI did."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..compat import legacy
from ..errors import LoadError
from ..predictor import Routine, Servable, VertexRoutine
from ..shims import Shims

log = logging.getLogger(__name__)


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
    from ..compat import keras_files

    found = keras_files.advice(Path(model_dir))
    return f"; {found}" if found else ""
