"""Mending scikit-learn estimators as they come out of a pickle, so they predict as they did.

Everything here runs in `BaseEstimator.__setstate__`, once for each estimator a
pickle holds: that is where every caller meets it, the user's own `pickle.load`
and `pipeline.predict_proba` in a predictor included, which a wrapper around our
own call would miss.

- **Custom estimators declared fitted.** A custom transformer of 2019 could keep
  what `fit` learnt in any attribute (`self.values = ...`). scikit-learn 0.20
  never asked whether a step was fitted; today a `Pipeline` (and a `FeatureUnion`)
  asks with `check_is_fitted`, which looks for an attribute ending in `_`, and
  refuses: "This Pipeline instance is not fitted yet". An estimator of a class from
  outside scikit-learn that comes out of a pickle with no such attribute, and says
  nothing itself (`__sklearn_is_fitted__`), gets scikit-learn's own protocol for
  declaring it fitted.
- **Parameters the writing release did not have.** scikit-learn's own estimators
  pickled by an older release lack the parameters added since (`monotonic_cst`,
  `ccp_alpha`, ...), and today's `predict` or `get_params` reads some of them. Each
  is set to its default, which is the behaviour from before it existed; a renamed
  one takes the value of its old name.

Estimators built in the process are left alone. Installed only with the legacy
layer, that is for models loaded from a deployment, and without importing
scikit-learn: the hook waits until something imports it.
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
        written = state.get("_sklearn_version") if isinstance(state, dict) else None
        original(self, state)
        if type(self).__module__.split(".")[0] == "sklearn":
            _fill_parameters(self, written or "before 0.18")
        else:
            _declare_if_unmarked(self)

    __setstate__.__wrapped__ = original
    estimator.__setstate__ = __setstate__


def _declare_if_unmarked(estimator) -> None:
    """Declares fitted an unpickled estimator whose fitted state scikit-learn cannot see."""
    cls = type(estimator)
    if hasattr(estimator, "__sklearn_is_fitted__"):
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


# Parameters scikit-learn renamed: (class, new name) -> the old name whose value it takes.
_RENAMED = {("OneHotEncoder", "sparse_output"): "sparse"}


def _fill_parameters(estimator, written: str) -> None:
    """Sets each parameter a pickle of scikit-learn's own estimator lacks to its default."""
    cls = type(estimator)
    missing = [n for n, _ in _defaults(cls) if n not in vars(estimator)]
    if not missing:
        return
    defaults = dict(_defaults(cls))
    filled = []
    for name in missing:
        old = _RENAMED.get((cls.__name__, name))
        value = vars(estimator)[old] if old in vars(estimator) else defaults[name]
        setattr(estimator, name, value)
        filled.append(f"{name}={value!r}" + (f" (its {old})" if old in vars(estimator) else ""))
    shims.note(
        shims.PICKLE_UPGRADE,
        f"{cls.__qualname__} was pickled by scikit-learn {written}, before these parameters "
        f"existed; set to the values that keep its behaviour: {', '.join(filled)}",
    )


@functools.cache
def _defaults(cls: type) -> tuple[tuple[str, object], ...]:
    """A scikit-learn estimator class's parameters and their defaults, from its `__init__`."""
    import inspect

    init = inspect.signature(cls.__init__).parameters.values()
    # A parameter with no default (Pipeline's steps) was always given, so always pickled.
    return tuple(
        (p.name, p.default)
        for p in init
        if p.name != "self"
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.default is not p.empty
    )
