"""The features of a scikit-learn or XGBoost model: what each takes, instances checked
against them, the rows a model predicts from, and their JSON Schema.

An instance is a row of values in the model's order or, where the model kept its
features' names (fitted on a pandas DataFrame), an object keyed by feature name.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import BadRequest

NAN = float("nan")

# float32's largest value, and the least number that rounds past it to infinity: a model
# holding its input as float32 (a Booster's DMatrix, scikit-learn's trees) fails on one.
FLOAT32_MAX = 3.4028234663852886e38
_FLOAT32_INFINITE = 3.4028235677973366e38


@dataclasses.dataclass(frozen=True)
class Feature:
    """What one feature of a model takes.

    `kind` is `number`; `code` (a category's number, where the model keeps no names for
    its categories or they cannot be read); `category` (one of `categories`, given by
    name, or by its code too where `by_code`); or None where the model checks its own
    input.
    """

    kind: str | None
    categories: tuple = ()
    by_code: bool = False
    dtype: str | None = None  # of categories that are numbers, where the model says
    codes: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def category(
        cls, categories: tuple, *, by_code: bool = False, dtype: str | None = None
    ) -> Feature:
        """One of `categories`, whose codes are their places in it."""
        codes = {c: i for i, c in enumerate(categories)}
        return cls("category", categories, by_code, dtype, codes)


NUMBER = Feature("number")
CODE = Feature("code")
ANY = Feature(None)


def named_rows(instances: list, names: list[str]) -> list[list]:
    """Each instance as a row of the model's features, in the order it was fitted with.

    An instance is a row of values in that order, or an object keyed by feature name.
    JSON's null becomes NaN, a missing value, whatever else the call holds.

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
                    + (f"lacks {listed(missing)}" if missing else "")
                    + (" and " if missing and unknown else "")
                    + (f"has {listed(unknown)}, which the model does not take" if unknown else "")
                    + f"; the model's features: {listed(names)}"
                )
            row = [instance[f] for f in names]
        elif isinstance(instance, list) and len(instance) == len(names):
            row = instance
        else:
            raise BadRequest(
                f"instance {n} must be a row of {len(names)} values or an object keyed by the "
                f"model's features ({listed(names)}); received {received(instance)}"
            )
        nested = next((i for i, v in enumerate(row) if isinstance(v, list | dict)), None)
        if nested is not None:
            raise BadRequest(
                f"instance {n} holds {received(row[nested])} for feature {names[nested]!r}; "
                "each feature takes one value"
            )
        rows.append([NAN if v is None else v for v in row])
    return rows


def listed(names: list | tuple, most: int = 12) -> str:
    shown = ", ".join(str(n)[:40] for n in names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def received(value: Any) -> str:
    """A JSON value as a message names it."""
    if isinstance(value, list):
        return f"a list of {len(value)} value{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return f"an object with keys {listed(list(value))}"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, bytes):
        return f"a b64 value of {len(value)} bytes"
    kind = "a string" if isinstance(value, str) else "a number"
    return f"{kind}, {value!r}"[:120]


def array(instances: list, width: int | None):
    """The instances as one array, `width` features a row when the model says.

    Raises:
        BadRequest: the rows are ragged, or of another width.
    """
    import numpy

    try:
        found = numpy.asarray(instances)
    except ValueError as exc:
        raise BadRequest(
            f"instances must form a rectangular array, one row of features per instance: {exc}"
        ) from exc
    if width is not None and (found.ndim != 2 or found.shape[1] != width):
        raise BadRequest(
            f"the model takes rows of {width} features; received instances of shape "
            f"{list(found.shape)}"
        )
    return found


def numbers(instances: list, width: int):
    """The instances as a 2-D array of numbers `width` wide, or None when they are not."""
    import numpy

    try:
        found = numpy.asarray(instances)
    except (ValueError, TypeError):
        return None
    fits = found.ndim == 2 and found.shape[1] == width and found.dtype.kind in "biuf"
    return found if fits else None


def number_rows(instances: list, width: int | None, no_missing: str | None, float32: bool):
    """Rows of numbers without names as one array, each value conformed where any is not a
    number (a string, a null); features are counted from 0 in messages.

    Raises:
        BadRequest: the rows are ragged or of another width, or a value is refused.
    """
    import numpy

    found = array(instances, width)
    if found.ndim != 2:
        return found  # the model's own check: it said no width
    labels = [str(i) for i in range(found.shape[1])]
    if found.dtype.kind not in "biuf":
        numeric = [NUMBER] * found.shape[1]
        found = numpy.array(conform(list(instances), labels, numeric, no_missing), dtype=float)
    if float32:
        check_float32(found, labels)
    return found


def conform(rows: list[list], labels: list[str], features: list[Feature], no_missing: str | None):
    """The rows as the model takes them: numbers (a string that reads as one too), NaN for
    JSON's null, and each category as its code.

    Args:
        labels: each feature as messages name it.
        no_missing: the model's name where it takes no missing values, else None.

    Raises:
        BadRequest: a value its feature cannot take, naming the feature and the instance.
    """
    return [
        [
            _conformed(value, feature, label, n, no_missing)
            for label, feature, value in zip(labels, features, row, strict=True)
        ]
        for n, row in enumerate(rows)
    ]


def _conformed(value: Any, feature: Feature, label: str, n: int, no_missing: str | None):
    kind = feature.kind
    if kind is None:
        return value
    if value is None or (isinstance(value, float) and value != value):
        if kind == "number" and no_missing is not None:
            raise BadRequest(
                f"feature {label} has no value (null) in instance {n}, and {no_missing} "
                "takes no missing values"
            )
        return NAN
    if kind == "category":
        code = feature.codes.get(value) if isinstance(value, str | int | float) else None
        if code is not None:
            return code
        if feature.by_code and _is_code(value, len(feature.categories)):
            return value
        codes = f" or their codes, 0 to {len(feature.categories) - 1}" if feature.by_code else ""
        categories = listed([repr(c) for c in feature.categories])
        raise BadRequest(
            f"feature {label} takes one of the model's categories ({categories}){codes}; "
            f"instance {n} holds {received(value)}"
        )
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):  # AI Platform's servers read "5.1" as 5.1
        try:
            number = float(value)
        except ValueError:
            number = NAN
        if math.isfinite(number):
            return number
    what = "numbers" if kind == "number" else "its categories' codes (numbers)"
    raise BadRequest(f"feature {label} takes {what}; instance {n} holds {received(value)}")


def _is_code(value: Any, count: int) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return float(value).is_integer() and 0 <= value < count


def check_float32(values, labels: list[str]) -> None:
    """Refuses a number that float32 cannot hold, in an array of numbers.

    Raises:
        BadRequest: naming the feature, the instance and the value.
    """
    import numpy

    past = numpy.abs(values) >= _FLOAT32_INFINITE  # NaN compares false: a missing value
    if past.any():
        n, i = (int(x) for x in numpy.argwhere(past)[0])
        raise BadRequest(
            f"feature {labels[i]} takes numbers of at most {FLOAT32_MAX} in size (the "
            f"model holds them as float32); instance {n} holds {received(float(values[n, i]))}"
        )


def frame(values, names: list[str], features: list[Feature]):
    """Conformed rows (an array of numbers and codes) as a DataFrame of the model's columns,
    each category column with the model's categories in the order of their codes."""
    import numpy
    import pandas

    found = pandas.DataFrame(values, columns=names, copy=False)
    for name, feature in zip(names, features, strict=True):
        if feature.kind == "category":
            column = found[name].to_numpy()
            codes = numpy.where(numpy.isnan(column), -1, column).astype(numpy.int64)
            categories = pandas.Index(feature.categories, dtype=feature.dtype)
            found[name] = pandas.Categorical.from_codes(codes, categories=categories)
    return found


def bodies(
    names: list[str] | None,
    features: list[Feature],
    *,
    missing: bool,
    probabilities: bool,
    float32: bool = False,
) -> dict[str, Any]:
    """JSON Schemas of the request and response: rows (and objects, with names) of features."""
    values = [_value_schema(feature, missing, float32) for feature in features]
    row: dict[str, Any] = {"type": "array", "minItems": len(values), "maxItems": len(values)}
    if len({str(v) for v in values}) == 1:
        row["items"] = values[0]
    else:
        row["prefixItems"] = values
    instance = row
    if names is not None:
        named = {
            "type": "object",
            "properties": dict(zip(names, values, strict=True)),
            "required": names,
            "additionalProperties": False,
        }
        instance = {"anyOf": [row, named]}
    request: dict[str, Any] = {
        "type": "object",
        "properties": {"instances": {"type": "array", "minItems": 1, "items": instance}},
        "required": ["instances"],
    }
    if probabilities:
        request["properties"]["probabilities"] = {
            "type": "boolean",
            "description": "predict_proba's answer instead of predict's",
        }
    response = {
        "type": "object",
        "properties": {"predictions": {"type": "array"}},
        "required": ["predictions"],
    }
    return {"request": request, "response": response}


def _value_schema(feature: Feature, missing: bool, float32: bool) -> dict[str, Any]:
    """What one feature takes: JSON's null for a missing value where the model takes one."""
    if feature.kind == "category":
        return {"enum": [*feature.categories, None]}
    if feature.kind is None:  # the model checks its own input
        return {"type": ["number", "string", "boolean", "null"]}
    if feature.kind == "code":
        schema: dict[str, Any] = {"type": "integer", "minimum": 0}
        if float32:
            schema["maximum"] = FLOAT32_MAX
    else:
        schema = {"type": "number"}
        if float32:
            schema.update(minimum=-FLOAT32_MAX, maximum=FLOAT32_MAX)
    if missing:
        schema["type"] = [schema["type"], "null"]
    return schema
