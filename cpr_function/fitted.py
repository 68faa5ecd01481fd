"""Declaring fitted the unpickled estimators that scikit-learn 0.20 predicted with unasked.

A custom transformer of 2019 could keep what `fit` learnt in any attribute
(`self.values = ...`). scikit-learn 0.20 never asked whether a step was fitted;
today a `Pipeline` (and a `FeatureUnion`) asks its steps with `check_is_fitted`,
which looks for an attribute ending in `_`, and refuses with "This Pipeline
instance is not fitted yet". The model was fitted, saved and deployed: it must
predict as it did.

The fix sits where every caller meets it, the user's own `pipeline.predict` on a
pickle it loaded itself included: `BaseEstimator.__setstate__`, which runs for each
estimator a pickle holds. An estimator of a class from outside scikit-learn that
comes out of a pickle with no attribute ending in `_`, and says nothing itself
(`__sklearn_is_fitted__`), gets scikit-learn's own protocol for declaring it
fitted. Estimators built in the process are left alone, and so are scikit-learn's
own classes, which keep their state as scikit-learn expects.

Installed only with the legacy layer, that is for models loaded from a deployment,
and without importing scikit-learn: the hook waits until something imports it.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
import threading

from . import shims

_MODULE = "sklearn.base"
_lock = threading.Lock()
_patched = False


def install() -> None:
    """Patches `BaseEstimator.__setstate__` now, or once `sklearn.base` is first imported."""
    with _lock:
        if _patched:
            return
        module = sys.modules.get(_MODULE)
        if module is not None:
            _patch(module)
        elif not any(isinstance(f, _OnImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _OnImport())


class _OnImport(importlib.abc.MetaPathFinder):
    """Finds `sklearn.base` as the path finder would, and patches it once it has run."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            with _lock:
                _patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _patch(module) -> None:
    global _patched
    if _patched:
        return
    estimator = module.BaseEstimator
    original = estimator.__setstate__

    def __setstate__(self, state):
        original(self, state)
        _declare_if_unmarked(self)

    __setstate__.__wrapped__ = original
    estimator.__setstate__ = __setstate__
    _patched = True


def _declare_if_unmarked(estimator) -> None:
    """Declares fitted an unpickled estimator whose fitted state scikit-learn cannot see."""
    cls = type(estimator)
    if cls.__module__.split(".")[0] == "sklearn" or hasattr(estimator, "__sklearn_is_fitted__"):
        return
    names = list(vars(estimator))
    if any(n.endswith("_") and not n.startswith("__") for n in names):
        return
    # A partial of a builtin, not a lambda: the estimator can still be pickled again.
    estimator.__sklearn_is_fitted__ = functools.partial(bool, True)
    kept = ", ".join(names) or "none"
    shims.note(
        shims.FITTED_CHECK,
        f"{cls.__module__}.{cls.__qualname__} was unpickled with no attribute ending in '_' "
        f"(its attributes: {kept}), which today's scikit-learn does not count as fitted; "
        "declared fitted (__sklearn_is_fitted__), as scikit-learn 0.20 never asked",
    )
