"""scikit-learn estimators and XGBoost models, served as AI Platform served them.

A model fitted on a pandas DataFrame keeps its column names: it is given a DataFrame (or
an XGBoost DMatrix) with those columns, so pipelines that pick columns by name work, and
an instance may be an object keyed by feature name as well as a row of values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BadRequest
from ..predictor import Routine


def load(path: Path) -> Routine:
    """Loads `model.bst` (an XGBoost Booster), or a pickled estimator (`.joblib`, `.pkl`)."""
    if path.suffix == ".bst":
        import xgboost

        booster = xgboost.Booster()
        # From the bytes: XGBoost finds JSON or UBJSON itself, where from a file it warns
        # that it guesses the format from the name, which AI Platform fixed as model.bst.
        booster.load_model(bytearray(path.read_bytes()))
        return Routine(_Booster(booster))
    if path.suffix == ".joblib":
        import joblib

        return Routine(_Estimator(joblib.load(path)))
    import pickle

    with open(path, "rb") as f:
        return Routine(_Estimator(pickle.load(f)))


def _named_rows(instances: list, names: list[str]) -> list[list]:
    """Each instance as a row of the model's features, in the order it was fitted with.

    An instance is a row of values in that order, or an object keyed by feature name.

    Raises:
        BadRequest: an instance is neither, lacks a feature or names one the model lacks.
    """
    known = set(names)
    rows = []
    for n, instance in enumerate(instances):
        if isinstance(instance, dict):
            missing = [f for f in names if f not in instance]
            unknown = [str(k) for k in instance if k not in known]
            if missing or unknown:
                raise BadRequest(
                    f"instance {n} "
                    + (f"lacks {_listed(missing)}" if missing else "")
                    + (" and " if missing and unknown else "")
                    + (f"has {_listed(unknown)}, which the model does not take" if unknown else "")
                    + f"; the model's features: {_listed(names)}"
                )
            row = [instance[f] for f in names]
        elif isinstance(instance, list) and len(instance) == len(names):
            row = instance
        else:
            raise BadRequest(
                f"instance {n} must be a row of {len(names)} values or an object keyed by the "
                f"model's features ({_listed(names)}); received {_received(instance)}"
            )
        nested = next((i for i, v in enumerate(row) if isinstance(v, list | dict)), None)
        if nested is not None:
            raise BadRequest(
                f"instance {n} holds {_received(row[nested])} for feature {names[nested]!r}; "
                "each feature takes one value"
            )
        # JSON's null is a missing value, whatever else the call holds (merged requests).
        rows.append([_NAN if v is None else v for v in row])
    return rows


_NAN = float("nan")


def _listed(names: list[str], most: int = 12) -> str:
    shown = ", ".join(str(n)[:40] for n in names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _received(value: Any) -> str:
    """A JSON value as a message names it."""
    if isinstance(value, list):
        return f"a list of {len(value)} value{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return f"an object with keys {_listed(list(value))}"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    kind = "a string" if isinstance(value, str) else "a number"
    return f"{kind}, {value!r}"[:120]


def _feature_names(model: Any) -> list[str] | None:
    """The column names a scikit-learn model was fitted with (on a pandas DataFrame)."""
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _array(instances: list, features: int | None):
    import numpy

    try:
        array = numpy.asarray(instances)
    except ValueError as exc:
        raise BadRequest(
            f"instances must form a rectangular array, one row of features per instance: {exc}"
        ) from exc
    if features is not None and (array.ndim != 2 or array.shape[1] != features):
        raise BadRequest(
            f"the model takes rows of {features} features; received instances of shape "
            f"{list(array.shape)}"
        )
    return array


class _Estimator:
    """A scikit-learn estimator, or an XGBoost model through its scikit-learn API."""

    # Each row is predicted on its own, so concurrent requests may share a call (batching.py).
    batchable = True

    def __init__(self, model):
        self._model = model
        self._names = _feature_names(model)
        self._frame = False  # without pandas, every model is given an array
        if self._names is not None and _needs_frame(model):
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
        self._kinds = _column_kinds(model)
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

    def _inputs(self, instances: list):
        """What the model was fitted on: a DataFrame with its columns, or an array."""
        import numpy

        names, kinds = self._names, self._kinds
        if names is None:
            array = _array(instances, getattr(self._model, "n_features_in_", None))
            if kinds is None or array.dtype.kind in "biuf" or array.ndim != 2:
                return array
            # Not all numbers: a string (or a null where the model takes none) is the
            # caller's to fix. Columns are counted from 0; codes stand for categories.
            rows = [[_NAN if v is None else v for v in row] for row in instances]
            _check_kinds(
                rows, [str(i) for i in range(len(kinds))], ["number"] * len(kinds), self._no_missing
            )
            return numpy.array(rows, dtype=float)
        array = _numbers(instances, len(names))  # the common case, without a loop per row
        if array is not None and "category" not in (kinds or ()):
            if not self._frame:
                return array
            import pandas

            return pandas.DataFrame(array, columns=names, copy=False)
        rows = _named_rows(instances, names)
        if kinds is not None:
            _check_kinds(rows, [repr(n) for n in names], kinds, self._no_missing)
        if not self._frame:
            # Checked numbers; or, where the model checks its own input (pandas missing),
            # each value as it came (a number stays a number beside a string).
            return numpy.array(rows, dtype=float if kinds is not None else object)
        import pandas

        # Rows mixing numbers and strings keep each value's type, column by column.
        frame = pandas.DataFrame(rows, columns=names)
        categorical = [n for n, k in zip(names, kinds or [], strict=False) if k == "category"]
        return frame.astype(dict.fromkeys(categorical, "category")) if categorical else frame


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
    return any(_holds_estimator(v) for v in model.get_params(deep=False).values())


def _holds_estimator(value: Any) -> bool:
    """An estimator, or a list of them as Pipeline's `steps` and ColumnTransformer's hold."""
    if isinstance(value, list | tuple):
        return any(_holds_estimator(v) for v in value)
    return hasattr(value, "fit")


def _numbers(instances: list, width: int):
    """The instances as a 2-D array of numbers `width` wide, or None when they are not."""
    import numpy

    try:
        array = numpy.asarray(instances)
    except (ValueError, TypeError):
        return None
    fits = array.ndim == 2 and array.shape[1] == width and array.dtype.kind in "biuf"
    return array if fits else None


def _column_kinds(model: Any) -> list[str] | None:
    """What each of a model's columns takes, where the model says: `number`, `category` (by
    name) or `code` (a category's number); None where the model checks its own input.

    scikit-learn's own leaf estimators take numbers only; an XGBoost model takes numbers
    and, for its categorical features, their categories.
    """
    module = type(model).__module__
    if module.startswith("sklearn.") and not _needs_frame(model):
        width = getattr(model, "n_features_in_", None)
        return None if width is None else ["number"] * width
    if module.startswith("xgboost.") and hasattr(model, "get_booster"):
        return _xgboost_kinds(model.get_booster())
    return None


def _xgboost_kinds(booster) -> list[str]:
    types = booster.feature_types or ["float"] * booster.num_features()
    categories = "category" if "c" in types and _keeps_category_names(booster) else "code"
    return [categories if t == "c" else "number" for t in types]


def _keeps_category_names(booster) -> bool:
    """Whether a Booster keeps the names of its categories, and so maps a category sent by
    name to the code it was trained with: XGBoost 3.1 and later, for a model trained on a
    DataFrame with category columns. Otherwise a category goes by its code only."""
    try:
        return not booster.get_categories().empty()
    except Exception:  # an older XGBoost, without get_categories
        return False


def _takes_missing(model: Any) -> bool:
    """Whether a model takes NaN among its numbers (scikit-learn says so in its tags)."""
    if not type(model).__module__.startswith("sklearn."):
        return True
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(model).input_tags.allow_nan)
    except Exception:  # an older scikit-learn: the model's own check decides
        return True


def _check_kinds(
    rows: list[list], labels: list[str], kinds: list[str], no_missing: str | None
) -> None:
    """Refuses a value a column cannot take: a non-number for a number (or a category's
    code), a non-name for a category by name, and a null (NaN) where `no_missing`, the
    model's name, takes none.

    Raises:
        BadRequest: naming the feature, the instance and the value.
    """
    for n, row in enumerate(rows):
        for label, kind, value in zip(labels, kinds, row, strict=True):
            if kind == "category":
                if not isinstance(value, str) and value == value:  # NaN: missing
                    raise BadRequest(
                        f"feature {label} takes one of the model's categories by name; "
                        f"instance {n} holds {_received(value)}"
                    )
            elif not isinstance(value, int | float):
                what = "numbers" if kind == "number" else "its categories' codes (numbers)"
                raise BadRequest(
                    f"feature {label} takes {what}; instance {n} holds {_received(value)}"
                )
            elif no_missing is not None and value != value:
                raise BadRequest(
                    f"feature {label} has no value (null) in instance {n}, and {no_missing} "
                    "takes no missing values"
                )


class _Booster:
    """An XGBoost Booster saved as `model.bst`."""

    batchable = True

    def __init__(self, booster):
        self._booster = booster
        self._kinds = _xgboost_kinds(booster)

    def predict(self, instances: list, **kwargs: Any):
        import xgboost

        names = self._booster.feature_names
        if names is None:
            inputs = _array(instances, self._booster.num_features() or None)
            return self._booster.predict(xgboost.DMatrix(inputs))
        inputs = _numbers(instances, len(names))
        if inputs is not None:  # categorical features as their codes, as before
            return self._booster.predict(xgboost.DMatrix(inputs, feature_names=names))
        rows = _named_rows(instances, names)
        _check_kinds(rows, [repr(n) for n in names], self._kinds, None)
        categorical = [n for n, k in zip(names, self._kinds, strict=True) if k == "category"]
        if not categorical:
            import numpy

            rows = numpy.array(rows, dtype=float)
            return self._booster.predict(xgboost.DMatrix(rows, feature_names=names))
        import pandas

        # Categories by name: XGBoost maps them to the codes it was trained with.
        frame = pandas.DataFrame(rows, columns=names).astype(dict.fromkeys(categorical, "category"))
        return self._booster.predict(xgboost.DMatrix(frame, enable_categorical=True))
