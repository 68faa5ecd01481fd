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

- **Trees of releases before 1.3 and 1.4.** A tree's node array gained a field in
  1.3 (`missing_go_to_left`), which today's `Tree.__setstate__` demands: an old
  array is carried over with it. Those releases refused missing values in trees,
  and so does a converted tree (rather than send them down a branch they never
  took). Before 1.4 a classifier's tree kept class counts where today's keeps
  fractions, which `predict_proba` now returns as they are: they are divided by
  their sums, as the old `predict_proba` did at each call.

- **Gradient boosting of before 1.3.** Its pickle holds a loss object of
  `sklearn.ensemble._gb_losses` (gone in 1.3; `sklearn.ensemble.gradient_boosting`
  before 0.21), where today's models keep `_loss`. The old object is read into a
  stand-in and replaced by today's loss of the same name (the loss names renamed in
  1.0 and 1.1 mapped: `deviance`, `ls`, `lad`). Before 0.21 the first guess came from
  estimators of that module too (`LogOddsEstimator`, `MeanEstimator`, ...), which
  kept one constant: it is carried over as an estimator answering that constant as
  today's loss reads it, so the raw scores are the old ones (0.20's multi-class
  models started from the class priors themselves, not their logarithms, and still
  do).

- **Logistic regression of one-vs-rest.** Until 1.8 a multi-class
  `LogisticRegression` fitted one-vs-rest (`multi_class='ovr'`; the default before
  0.22, and `'auto'` with liblinear after) answered `predict_proba` by normalizing
  each class's sigmoid; today's answers the softmax of the same scores, other
  numbers with no error. Such a model keeps its class but answers as it did.

Estimators built in the process are left alone. Installed only with the legacy
layer, that is for models loaded from a deployment, and without importing
scikit-learn: the hook waits until something imports it.
"""

from __future__ import annotations

import functools

from .. import shims
from . import onimport


def install() -> None:
    """Patches `BaseEstimator.__setstate__` now, or once `sklearn.base` is first imported;
    safe to call more than once (onimport runs each patch once)."""
    onimport.after("sklearn.base", _patch)
    onimport.after("sklearn.tree", _patch_tree)
    onimport.after("sklearn.ensemble", _stand_in_for_old_losses)


def _patch(module) -> None:
    estimator = module.BaseEstimator
    original = estimator.__setstate__

    def __setstate__(self, state):
        written = state.get("_sklearn_version") if isinstance(state, dict) else None
        original(self, state)
        if type(self).__module__.split(".")[0] == "sklearn":
            _fill_parameters(self, written or "before 0.18")
            _upgrade_tree(self, written or "before 0.18")
            _upgrade_gradient_boosting(self, written or "before 0.18")
            _keep_one_vs_rest(self, written or "before 0.18")
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


# Attributes any ensemble renamed in 1.2 (the parameter and the fitted estimator it made).
_RENAMED_ATTRIBUTES = {"estimator": "base_estimator", "estimator_": "base_estimator_"}


def _fill_parameters(estimator, written: str) -> None:
    """Sets each parameter a pickle of scikit-learn's own estimator lacks to its default."""
    cls = type(estimator)
    kept = vars(estimator)
    for new, old in _RENAMED_ATTRIBUTES.items():
        if old in kept and new not in kept:
            setattr(estimator, new, kept[old])
            shims.note(
                shims.PICKLE_UPGRADE,
                f"{cls.__qualname__} was pickled by scikit-learn {written}: its {old} is "
                f"{new} since 1.2",
            )
    missing = [n for n, _ in _defaults(cls) if n not in kept]
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


def _release(written: str) -> tuple[int, int]:
    """`1.2.2` as (1, 2); a release that recorded none (before 0.18) as (0, 0)."""
    parts = [p for p in written.split(".")[:2] if p.isdigit()]
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 else (0, 0)


def _patch_tree(package) -> None:
    """Pickles find a subclass of `Tree` under its name, which upgrades old node arrays;
    `isinstance` and `issubclass` still see scikit-learn's own `Tree` as the same class.

    Compiled modules that use `Tree`'s type (the tree builders, gradient boosting's
    prediction) must have taken scikit-learn's own before the name is rebound: they
    are imported first.
    """
    import copyreg
    import importlib

    module = package._tree
    importlib.import_module("sklearn.ensemble._gradient_boosting")
    base, node_dtype = module.Tree, module.NODE_DTYPE

    class _SameAsTree(type(base)):
        def __instancecheck__(cls, instance):
            return isinstance(instance, base)

        def __subclasscheck__(cls, subclass):
            return issubclass(subclass, base)

    class Tree(base, metaclass=_SameAsTree):
        __slots__ = ()  # the size of scikit-learn's own, for compiled code that checks it

        def __setstate__(self, state):
            nodes = state.get("nodes") if isinstance(state, dict) else None
            fields = getattr(getattr(nodes, "dtype", None), "names", None) or ()
            if fields and "missing_go_to_left" not in fields:
                state = {**state, "nodes": _nodes_of_today(nodes, node_dtype)}
            base.__setstate__(self, state)

    vtable = vars(base).get("__pyx_vtable__")
    if vtable is not None:  # what a compiled module imported later looks the type up by
        Tree.__pyx_vtable__ = vtable
    Tree.__module__, Tree.__qualname__ = base.__module__, base.__qualname__

    def reduce(tree):
        # Pickled under the name `sklearn.tree._tree.Tree`, which pickle checks is the
        # class it is given: now this one. Any release reads it back as its own Tree.
        _, arguments, state = base.__reduce__(tree)
        return Tree, arguments, state

    copyreg.pickle(base, reduce)
    copyreg.pickle(Tree, reduce)
    module.Tree = Tree


def _nodes_of_today(nodes, node_dtype):
    """A node array of before 1.3 in today's layout: each field as it was, and no missing
    value sent left (the estimator refuses them: `_upgrade_tree`)."""
    import numpy

    upgraded = numpy.zeros(nodes.shape, dtype=node_dtype)
    for name in nodes.dtype.names:
        upgraded[name] = nodes[name]
    return upgraded


def _upgrade_tree(estimator, written: str) -> None:
    """A decision tree of before 1.3 refuses missing values, as it did; a classifier's tree
    of before 1.4 holds fractions where it held class counts."""
    tree = vars(estimator).get("tree_")
    if tree is None or _release(written) >= (1, 4):
        return
    changed = []
    if _release(written) < (1, 3):
        estimator._support_missing_values = _refuses_missing
        changed.append("refuses missing values, as it did")
    if tree.max_n_classes > 1:
        values = tree.value
        sums = values.sum(axis=2, keepdims=True)
        sums[sums == 0.0] = 1.0
        values /= sums
        changed.append("its class counts made fractions, as its predict_proba made them")
    shims.note(
        shims.PICKLE_UPGRADE,
        f"the trees of a {type(estimator).__qualname__} pickled by scikit-learn {written}: "
        + "; ".join(changed),
    )


def _refuses_missing(X) -> bool:
    """What a tree of scikit-learn before 1.3 said: it takes no missing values."""
    return False


_GB_LOSSES = "sklearn.ensemble._gb_losses"
_GB_BEFORE_0_21 = "sklearn.ensemble.gradient_boosting"
# 0.20's first-guess estimators, and the attribute holding the constant each answered.
_OLD_INITS = {
    "LogOddsEstimator": "prior",
    "ScaledLogOddsEstimator": "prior",
    "MeanEstimator": "mean",
    "QuantileEstimator": "quantile",
    "PriorProbabilityEstimator": "priors",
    "ZeroEstimator": None,
}
# Loss names gradient boosting renamed (1.0, 1.1) and then stopped taking.
_LOSS_NAMES = {"deviance": "log_loss", "ls": "squared_error", "lad": "absolute_error"}


def _stand_in_for_old_losses(ensemble) -> None:
    """Modules under the old losses' names, whose every class takes what a pickle kept;
    0.20's also holds its first-guess estimators and passes today's models through."""
    import sys
    import types

    if _GB_LOSSES in sys.modules:
        return
    losses = types.ModuleType(_GB_LOSSES, "Stand-ins for the losses scikit-learn 1.3 removed.")
    made: dict[str, type] = {}

    def stand_in(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        base = _OldInit if name in _OLD_INITS else _OldLoss
        return made.setdefault(name, type(name, (base,), {"__module__": _GB_LOSSES}))

    def of_0_20(name: str) -> object:
        from sklearn.ensemble import _gb

        return getattr(_gb, name) if hasattr(_gb, name) else stand_in(name)

    losses.__getattr__ = stand_in
    sys.modules[_GB_LOSSES] = losses
    before_0_21 = types.ModuleType(_GB_BEFORE_0_21, "scikit-learn 0.20's gradient boosting.")
    before_0_21.__getattr__ = of_0_20
    sys.modules[_GB_BEFORE_0_21] = before_0_21


def _plain(value) -> object:
    """A NumPy scalar or array as the Python number or list it holds."""
    return value.tolist() if hasattr(value, "tolist") else value


class _OldLoss:
    """What a pickled loss object of scikit-learn before 1.3 held; replaced once read."""


class _OldInit:
    """What a pickled first-guess estimator of scikit-learn 0.20 held; replaced once read."""


class FirstGuess:
    """The constant first guess of a gradient boosting model of scikit-learn 0.20, answered
    as today's model asks its `init_` (`predict`, or `predict_proba` that its loss turns
    back into that constant)."""

    def __init__(self, raw, loss):
        import numpy as np

        self.raw = np.atleast_1d(np.asarray(raw, dtype=np.float64))
        if loss.is_multiclass:
            self.proba = loss.link.inverse(self.raw[np.newaxis, :])[0]
        else:
            positive = loss.link.inverse(self.raw)
            self.proba = np.concatenate([1 - positive, positive])

    def predict(self, X):
        import numpy as np

        return np.tile(self.raw, (len(X), 1)) if self.raw.size > 1 else np.full(len(X), self.raw[0])

    def predict_proba(self, X):
        import numpy as np

        return np.tile(self.proba, (len(X), 1))


def _upgrade_gradient_boosting(estimator, written: str) -> None:
    """Gives a gradient boosting model of before 1.3 today's loss object of its loss."""
    # 0.21 to 1.0 kept it as loss_, 1.1 and 1.2 as _loss.
    kept = {k: v for k, v in vars(estimator).items() if isinstance(v, _OldLoss)}
    if not kept:
        return
    old = next(iter(kept.values()))
    name = _LOSS_NAMES.get(estimator.loss, estimator.loss)
    estimator.loss = name
    vars(estimator).pop("loss_", None)
    estimator._loss = estimator._get_loss(sample_weight=None)
    where = _GB_LOSSES if _release(written) >= (0, 21) else _GB_BEFORE_0_21
    shims.note(
        shims.PICKLE_UPGRADE,
        f"{type(estimator).__qualname__} pickled by scikit-learn {written} kept its loss as "
        f"{type(old).__name__} of {where} (gone in 1.3): today's "
        f"{type(estimator._loss).__name__} for loss={name!r}",
    )
    _carry_over_first_guess(estimator, written)


def _carry_over_first_guess(estimator, written: str) -> None:
    """Replaces 0.20's first-guess estimator by one answering its constant as today's."""
    old = getattr(estimator, "init_", None)
    if not isinstance(old, _OldInit):
        return
    kind = type(old).__name__
    kept = _OLD_INITS[kind]
    if kept is None:
        estimator.init_ = "zero"  # today's spelling of ZeroEstimator
    else:
        estimator.init_ = FirstGuess(vars(old)[kept], estimator._loss)
    shims.note(
        shims.PICKLE_UPGRADE,
        f"{type(estimator).__qualname__} pickled by scikit-learn {written} started from a "
        f"{kind} of {_GB_BEFORE_0_21} (gone in 0.21): its first guess "
        + ("is zero" if kept is None else f"{kept}={_plain(vars(old)[kept])} is kept as it was"),
    )


def _keep_one_vs_rest(estimator, written: str) -> None:
    """Keeps the probabilities of a one-vs-rest logistic regression of before 1.8."""
    kept = vars(estimator)
    if "multi_class" not in kept or type(estimator).__name__ not in _LOGISTIC:
        return  # written by 1.8 or later, or another estimator
    classes = kept.get("classes_")
    if classes is None or len(classes) <= 2:
        return  # binary: one sigmoid then and now
    solver = "liblinear" if kept.get("solver") == "warn" else kept.get("solver")
    meant = {"warn": "ovr", "auto": "ovr" if solver == "liblinear" else "multinomial"}
    if meant.get(kept["multi_class"], kept["multi_class"]) != "ovr":
        return
    estimator.__class__ = _one_vs_rest(type(estimator))
    setattr(estimator, _PICKLED_BY, written)
    shims.note(
        shims.PICKLE_UPGRADE,
        f"{type(estimator).__qualname__} pickled by scikit-learn {written} with "
        f"multi_class={kept['multi_class']!r} and solver={kept.get('solver')!r} fitted one "
        "class against the rest; today's predict_proba would take a softmax of its scores "
        "(1.8 removed one-vs-rest), so it normalizes each class's sigmoid as it did",
    )


_LOGISTIC = ("LogisticRegression", "LogisticRegressionCV")
_PICKLED_BY = "_pickled_by_sklearn"  # the release that wrote it, for pickling it again


@functools.cache
def _one_vs_rest(base: type) -> type:
    """`base` answering probabilities one-vs-rest, pickled again as `base` itself."""

    def predict_proba(self, X):
        return self._predict_proba_lr(X)

    def __reduce_ex__(self, protocol):
        import copyreg

        state = self.__getstate__()
        state["_sklearn_version"] = state.pop(_PICKLED_BY)  # as it came, not as ours
        # As pickle's protocols 0 and 1 write any object, naming the class it came from.
        return copyreg._reconstructor, (base, object, None), state

    methods = {"predict_proba": predict_proba, "__reduce_ex__": __reduce_ex__}
    return type(base.__name__, (base,), {**methods, "__module__": __name__})
