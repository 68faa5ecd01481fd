"""scikit-learn estimators and XGBoost models, served as AI Platform served them.

A model fitted on a pandas DataFrame keeps its column names: it is given a DataFrame (or
an XGBoost DMatrix) with those columns, so pipelines that pick columns by name work, and
an instance may be an object keyed by feature name as well as a row of values. What each
feature takes, where the model says, is checked before the model is called (features.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import shims
from ..compat import binary_booster, provenance
from ..errors import BadRequest, LoadError
from ..predictor import Routine
from . import features
from .features import ANY, CODE, NUMBER, Feature


def predictor_classes() -> tuple[type, ...]:
    """The classes of the predictors `load` may give, for what they declare before any
    model is loaded (their `batchable`, see frameworks.declares_batchable)."""
    return (_Estimator, _Booster)


def load(path: Path) -> Routine:
    """Loads `model.bst` (an XGBoost Booster), or a pickled estimator (`.joblib`, `.pkl`)."""
    if path.suffix == ".bst":
        data = path.read_bytes()
        if binary_booster.is_binary(data):
            return _Served(_Booster(_binary_booster(path.name, data)))
        import xgboost

        booster = xgboost.Booster()
        # From the bytes: XGBoost finds JSON or UBJSON itself, where from a file it warns
        # that it guesses the format from the name, which AI Platform fixed as model.bst.
        booster.load_model(bytearray(data))
        return _Served(_Booster(booster))
    if path.suffix == ".joblib":
        import joblib

        return _Served(_Estimator(joblib.load(path)))
    import pickle

    with open(path, "rb") as f:
        return _Served(_Estimator(pickle.load(f)))


def _binary_booster(name: str, data: bytes):
    """An `xgboost.Booster` from XGBoost's old binary format, through Treelite; the shim noted.

    Raises:
        LoadError: Treelite is not installed, or the model cannot be carried over.
    """
    written = binary_booster.release(data)
    try:
        booster = binary_booster.booster(data)
    except ImportError as exc:
        raise LoadError(
            f"{name} is an XGBoost Booster in the binary format of XGBoost {written}, which "
            "XGBoost 3.1 and later cannot read; serving it needs treelite: add treelite>=4.8 "
            "to requirements.txt (requirements-frameworks.txt has it)"
        ) from exc
    except binary_booster.Unconvertible as exc:
        raise LoadError(
            f"{name} is an XGBoost Booster in the binary format of XGBoost {written}, and it "
            f"cannot be carried over to today's XGBoost: {exc}. To fix: load it once with "
            f"XGBoost {written} and save_model('model.json'), then rename that to model.bst"
        ) from exc
    except Exception as exc:
        raise LoadError(
            f"{name} is not JSON or UBJSON, so it should be an XGBoost Booster in the binary "
            f"format of XGBoost before 2.0, and Treelite cannot read it either: "
            f"{provenance.first_line(exc)}. To fix: load it once with the XGBoost release "
            "that wrote it and save_model('model.json'), then rename that to model.bst"
        ) from exc
    shims.note(
        shims.MODEL_CONVERSION,
        f"{name} was written by XGBoost {written} in its binary format, which this XGBoost "
        "cannot read: carried over to XGBoost's JSON model through Treelite",
    )
    return booster


class _Served(Routine):
    """A framework model answering AI Platform's body, with the schema of its instances."""

    def schemas(self) -> dict[str, Any] | None:
        return self.predictor.schemas()


def _feature_names(model: Any) -> list[str] | None:
    """The column names a scikit-learn model was fitted with (on a pandas DataFrame)."""
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


class _Estimator:
    """A scikit-learn estimator, or an XGBoost model through its scikit-learn API."""

    # Each row is predicted on its own, so concurrent requests may share a call (batching.py).
    batchable = True

    def __init__(self, model):
        self._model = model
        self._names = _feature_names(model)
        needs_frame = _needs_frame(model)
        self._frame = False  # without pandas, every model is given an array
        if self._names is not None and needs_frame:
            try:
                import pandas  # noqa: F401 - each call needs it; found once, here
            except ImportError:
                pass  # as before names were kept: the values in order, and the model's warning
            else:
                self._frame = True
        elif self._names is not None:
            # A leaf estimator keeps the names only to check them against a DataFrame's;
            # without them it takes an array of the same values in the same order as is,
            # and has nothing to warn about.
            del model.feature_names_in_
        self._features = _features_of(model, needs_frame)
        self._labels = [repr(n) for n in self._names] if self._names is not None else None
        # Categories go by name, so an all-numbers call is not simply an array for them.
        self._categorical = any(f.kind == "category" for f in self._features or ())
        self._float32 = self._features is not None and _holds_float32(model)
        # Who refuses a null (NaN) in a number column, named in the 400 that says so.
        self._no_missing = None if _takes_missing(model) else type(model).__name__

    def predict(self, instances: list, probabilities: bool = False, **kwargs: Any):
        inputs = self._inputs(instances)
        if probabilities:
            if not hasattr(self._model, "predict_proba"):
                raise BadRequest(
                    f"probabilities=true needs a classifier with predict_proba; "
                    f"{type(self._model).__name__} has none"
                )
            return self._model.predict_proba(inputs)
        return self._model.predict(inputs)

    def schemas(self) -> dict[str, Any] | None:
        """The request and response bodies, where the model says what its instances hold."""
        if self._names is None and self._features is None:
            return None
        return features.bodies(
            self._names,
            self._features or [ANY] * len(self._names),
            missing=self._no_missing is None,
            probabilities=hasattr(self._model, "predict_proba"),
            float32=self._float32,
        )

    def _inputs(self, instances: list):
        """What the model was fitted on: a DataFrame with its columns, or an array."""
        import numpy

        names, known = self._names, self._features
        if names is None:
            width = getattr(self._model, "n_features_in_", None)
            if known is None:
                return features.array(instances, width)
            return features.number_rows(instances, width, self._no_missing, self._float32)
        array = None if self._categorical else features.numbers(instances, len(names))
        if array is None:  # not all numbers: a row at a time
            rows = features.named_rows(instances, names)
            if known is None:
                # The model checks its own input: each value as it came (a number stays a
                # number beside a string), in a DataFrame with pandas, else an array.
                if not self._frame:
                    return numpy.array(rows, dtype=object)
                import pandas

                return pandas.DataFrame(rows, columns=names)
            rows = features.conform(rows, self._labels, known, self._no_missing)
            array = numpy.array(rows, dtype=float)
        if self._float32:
            features.check_float32(array, self._labels)
        if not self._frame:
            return array
        return features.frame(array, names, known or [ANY] * len(names))


def _needs_frame(model: Any) -> bool:
    """Whether a model fitted on a DataFrame must be given one, not only values in order.

    scikit-learn's own leaf estimators take numbers only and use the names only to check
    them, and take a DataFrame at several times the cost of an array (740 against 200 us
    a call for a LogisticRegression). Pipelines, column transformers, meta-estimators
    (anything that holds another estimator), histogram gradient boosting with categorical
    features and other libraries' models may pick columns by name or type, so they get
    the DataFrame.
    """
    if not type(model).__module__.startswith("sklearn."):
        return True
    categorical = getattr(model, "is_categorical_", None)  # histogram gradient boosting's
    if categorical is not None and any(categorical):
        return True  # it encodes those columns by name, with an encoder fitted on the frame
    # Each parameter as the model holds it, not get_params(): that raises on a model
    # pickled before one of its parameters existed, which predicts all the same.
    names = getattr(type(model), "_get_param_names", lambda: [])()
    return any(_holds_estimator(getattr(model, name, None)) for name in names)


def _holds_estimator(value: Any) -> bool:
    """An estimator, or a list of them as Pipeline's `steps` and ColumnTransformer's hold."""
    if isinstance(value, list | tuple):
        return any(_holds_estimator(v) for v in value)
    return hasattr(value, "fit")


def _features_of(model: Any, needs_frame: bool) -> list[Feature] | None:
    """What each of a model's features takes, where the model says; None where it checks
    its own input (pipelines and the like, other libraries' models).

    scikit-learn's own leaf estimators take numbers only; an XGBoost model takes numbers
    and, for its categorical features, their categories.
    """
    module = type(model).__module__
    if module.startswith("sklearn.") and not needs_frame:
        width = getattr(model, "n_features_in_", None)
        return None if width is None else [NUMBER] * width
    if module.startswith("xgboost.") and hasattr(model, "get_booster"):
        return _xgboost_features(model.get_booster(), booster_api=False)
    return None


def _holds_float32(model: Any) -> bool:
    """Whether a scikit-learn model holds its input as float32, and so fails on a number
    past float32's range: a tree, or an ensemble of them (forests, gradient boosting,
    AdaBoost and bagging of trees). XGBoost's scikit-learn models answer such numbers, and
    so does an isolation forest, which lets them through to its trees."""
    module = type(model).__module__
    if module.startswith("sklearn.tree."):
        return True
    if module.startswith("sklearn.ensemble._iforest"):
        return False
    inner = getattr(model, "estimators_", None)
    if inner is None:
        inner = getattr(model, "estimator_", None)
    if inner is None:
        return False
    import numpy

    first = numpy.ravel(numpy.asarray(inner, dtype=object))[:1]
    return len(first) == 1 and type(first[0]).__module__.startswith("sklearn.tree.")


def _takes_missing(model: Any) -> bool:
    """Whether a model takes NaN among its numbers (scikit-learn says so in its tags)."""
    if not type(model).__module__.startswith("sklearn."):
        return True
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(model).input_tags.allow_nan)
    except Exception:  # an older scikit-learn: the model's own check decides
        return True


def _xgboost_features(booster, *, booster_api: bool) -> list[Feature]:
    """What each feature of an XGBoost model takes. A Booster (`booster_api`) also takes a
    category's code where no name reads as a number; a scikit-learn-API model takes the
    categories only.

    Raises:
        LoadError: a scikit-learn-API model, which takes no codes, whose categories' names
            cannot be read back from the model.
    """
    types = booster.feature_types or ["float"] * booster.num_features()
    if "c" not in types:
        return [NUMBER] * len(types)
    categories = _xgboost_categories(booster) or [None] * len(types)
    unreadable = [n for n, found in enumerate(categories) if found is not None and not found[0]]
    if unreadable and not booster_api:
        names = booster.feature_names or [str(n) for n in range(len(types))]
        raise LoadError(
            f"the categories of feature {names[unreadable[0]]!r} are not ASCII, and XGBoost "
            "(3.2 and before) stores such names cut at the wrong places: it maps them to the "
            "wrong codes, so this model would answer wrongly. Train it on ASCII categories, "
            "or save its Booster as model.bst, which takes the categories' codes"
        )
    features = []
    for kind, found in zip(types, categories, strict=True):
        if kind != "c":
            features.append(NUMBER)
        elif found is None or not found[0]:
            features.append(CODE)  # no names kept, or none readable: by code only
        else:
            names, dtype = found
            by_code = booster_api and not any(_reads_as_number(n) for n in names)
            features.append(Feature.category(names, by_code=by_code, dtype=dtype))
    return features


def _reads_as_number(category: Any) -> bool:
    """Whether a category could be meant by a JSON number: a number, or a name like "1",
    for which a number sent cannot be told from a code."""
    if not isinstance(category, str):
        return True
    try:
        float(category)
    except ValueError:
        return False
    return True


def _xgboost_categories(booster) -> list[tuple[tuple, str | None] | None] | None:
    """Each feature's categories in the order of their codes and, for numbers, their
    integer type (`()` where they cannot be read, None for a numeric feature), or None
    where the model keeps none.

    XGBoost 3.1 and later write them into the model (its JSON's `cats`) when it was trained
    on a DataFrame with category columns, and map a category given by name to its code.
    Before, or trained on codes, a model knows its categories by code only.
    """
    import json

    try:
        learner = json.loads(bytes(booster.save_raw(raw_format="json")))["learner"]
        trees = learner["gradient_booster"]
        trees = trees.get("gbtree", trees)  # dart keeps its trees one level down
        encodings = trees["model"]["cats"]["enc"]
    except (KeyError, TypeError, ValueError):
        return None
    found = [_decoded(e) for e in encodings]
    kept = len(found) == booster.num_features() and any(f is not None for f in found)
    return found if kept else None


# The integer type of a category column of numbers, as XGBoost's JSON numbers it: the
# model maps a category only from a column of the same type.
_INTEGER_TYPES = {
    9: "int8",
    10: "uint8",
    11: "int16",
    12: "uint16",
    13: "int32",
    14: "uint32",
    15: "int64",
    16: "uint64",
}


def _decoded(encoding: dict) -> tuple[tuple, str | None] | None:
    """One feature's categories from the model's JSON, and their type: strings as UTF-8
    bytes cut at their offsets, or numbers as they are."""
    values, offsets = encoding.get("values") or [], encoding.get("offsets")
    if not offsets:
        return (tuple(values), _INTEGER_TYPES.get(encoding.get("type"))) if values else None
    if any(v < 0 for v in values):
        # Not ASCII: XGBoost 3.2 cuts such names at offsets counted in characters, not
        # bytes; neither this nor XGBoost can read them back. Codes still map right.
        return (), None
    data = bytes(values)
    names = tuple(data[a:b].decode() for a, b in zip(offsets, offsets[1:], strict=False))
    return names, None


class _Booster:
    """An XGBoost Booster saved as `model.bst`.

    It is given a DMatrix of numbers, each category as its code: by name or by code, a
    category reaches it as the code it was trained with.
    """

    batchable = True

    def __init__(self, booster):
        self._booster = booster
        self._features = _xgboost_features(booster, booster_api=True)
        names = booster.feature_names
        self._labels = [repr(n) for n in names] if names is not None else None
        self._categorical = any(f.kind == "category" for f in self._features)

    def schemas(self) -> dict[str, Any]:
        names = self._booster.feature_names
        known = self._features if names is not None else [NUMBER] * len(self._features)
        return features.bodies(names, known, missing=True, probabilities=False, float32=True)

    def predict(self, instances: list, **kwargs: Any):
        import numpy
        import xgboost

        names = self._booster.feature_names
        if names is None:
            width = self._booster.num_features() or None
            inputs = features.number_rows(instances, width, None, float32=True)
            return self._booster.predict(xgboost.DMatrix(inputs))
        # All numbers and no categories by name: the array as it came (the common case).
        array = None if self._categorical else features.numbers(instances, len(names))
        if array is None:
            rows = features.named_rows(instances, names)
            rows = features.conform(rows, self._labels, self._features, None)
            array = numpy.array(rows, dtype=float)
        features.check_float32(array, self._labels)
        return self._booster.predict(xgboost.DMatrix(array, feature_names=names))
