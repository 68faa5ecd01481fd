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
import threading

from . import onimport, shims

_lock = threading.Lock()
_installed = False


def install() -> None:
    """Patches `BaseEstimator.__setstate__` now, or once `sklearn.base` is first imported."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    onimport.after("sklearn.base", _patch)


def _patch(module) -> None:
    estimator = module.BaseEstimator
    original = estimator.__setstate__

    def __setstate__(self, state):
        original(self, state)
        _declare_if_unmarked(self)

    __setstate__.__wrapped__ = original
    estimator.__setstate__ = __setstate__


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
