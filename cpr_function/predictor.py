"""The predictor contract users already wrote for AI Platform, and finding their class."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from . import legacy
from .errors import LoadError


@runtime_checkable
class Predictor(Protocol):
    """What AI Platform's custom prediction routines implement; nothing to subclass."""

    def predict(self, instances: list, **kwargs: Any) -> Any:
        """Returns one prediction per instance."""

    @classmethod
    def from_path(cls, model_dir: str) -> Predictor:
        """Loads the artifacts in `model_dir` and returns a ready predictor."""


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
    missing = [m for m in ("from_path", "predict") if not callable(getattr(cls, m, None))]
    if missing:
        raise LoadError(
            f"prediction class {class_path} must define from_path(model_dir) and "
            f"predict(instances, **kwargs); it lacks {' and '.join(missing)}"
        )
    return cls


def _import_failed(class_path: str, exc: BaseException) -> LoadError:
    return LoadError(f"importing prediction class {class_path} failed: {legacy.describe(exc)}")


def construct(cls: type, model_dir: Path) -> Predictor:
    """Calls the user's `from_path`.

    Raises:
        LoadError: `from_path` raised, or returned something without `predict`.
    """
    try:
        predictor = cls.from_path(str(model_dir))
    except (Exception, SystemExit) as exc:
        raise LoadError(
            f"{cls.__module__}.{cls.__qualname__}.from_path failed: {legacy.describe(exc)}"
        ) from exc
    if not callable(getattr(predictor, "predict", None)):
        raise LoadError(
            f"{cls.__module__}.{cls.__qualname__}.from_path must return an object with "
            f"predict(); it returned {type(predictor).__name__}"
        )
    return predictor
