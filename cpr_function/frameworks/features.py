"""The features of a scikit-learn or XGBoost model: what each takes, instances checked
against them, the rows a model predicts from, and their JSON Schema.

An instance is a row of values in the model's order or, where the model kept its
features' names (fitted on a pandas DataFrame), an object keyed by feature name.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..errors import BadRequest

NAN = float("nan")


class Feature(NamedTuple):
    """What one feature of a model takes.

    `kind` is `number`; `code` (a category's number, where the model keeps no names for
    its categories or they cannot be read); `category` (one of `categories`, in the order
    of their codes); or None where the model checks its own input.
    """

    kind: str | None
    categories: tuple = ()
    known: frozenset = frozenset()

    @classmethod
    def category(cls, categories: tuple) -> Feature:
        return cls("category", categories, frozenset(categories))


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
    """Rows of numbers without names as one array, each value checked where any is not a
    number (a string, a null where `no_missing` takes none); features counted from 0.

    Raises:
        BadRequest: the rows are ragged or of another width, or a value is refused.
    """
    import numpy

    found = array(instances, width)
    if found.ndim != 2:
        return found  # the model's own check: it said no width
    labels = [str(i) for i in range(found.shape[1])]
    numeric = [NUMBER] * found.shape[1]
    if found.dtype.kind not in "biuf":
        rows = [[NAN if v is None else v for v in row] for row in instances]
        check(rows, labels, numeric, no_missing)
        found = numpy.array(rows, dtype=float)
    if float32:
        check_float32(found, labels, numeric)
    return found


def check(rows: list[list], labels: list[str], features: list[Feature], no_missing: str | None):
    """Refuses a value its feature cannot take: a non-number for a number or a code, an
    unknown category, and a null (NaN) for a number where `no_missing`, the model's name,
    takes none.

    Raises:
        BadRequest: naming the feature, the instance and the value.
    """
    for n, row in enumerate(rows):
        for label, feature, value in zip(labels, features, row, strict=True):
            kind = feature.kind
            if kind is None:
                continue
            if value != value:  # NaN: JSON's null, a missing value
                if kind != "category" and no_missing is not None:
                    raise BadRequest(
                        f"feature {label} has no value (null) in instance {n}, and "
                        f"{no_missing} takes no missing values"
                    )
                continue
            if kind == "category":
                if value not in feature.known:
                    raise BadRequest(
                        f"feature {label} takes one of the model's categories "
                        f"({listed(feature.categories)}); instance {n} holds {received(value)}"
                    )
            elif not isinstance(value, int | float):
                what = "numbers" if kind == "number" else "its categories' codes (numbers)"
                raise BadRequest(
                    f"feature {label} takes {what}; instance {n} holds {received(value)}"
                )


# The largest float32: a model holding its input as float32 (XGBoost, scikit-learn's trees)
# makes a number past it infinite, and refuses that with an error of its own.
FLOAT32_MAX = 3.4028234663852886e38


def check_float32(values, labels: list[str], features: list[Feature]) -> None:
    """Refuses a number past float32's range in the rows (a list, or an array of numbers).

    Raises:
        BadRequest: naming the feature, the instance and the value.
    """
    import numpy

    numeric = [i for i, f in enumerate(features) if f.kind in ("number", "code")]
    if isinstance(values, list):
        values = numpy.array([[row[i] for i in numeric] for row in values], dtype=float)
        labels = [labels[i] for i in numeric]
    with numpy.errstate(invalid="ignore"):
        past = numpy.abs(values) > FLOAT32_MAX
    if past.any():
        n, i = (int(x) for x in numpy.argwhere(past)[0])
        raise BadRequest(
            f"feature {labels[i]} takes numbers of at most {FLOAT32_MAX:.7g} in size (the "
            f"model holds them as float32); instance {n} holds {received(float(values[n, i]))}"
        )


def frame(rows: list[list], names: list[str], features: list[Feature] | None):
    """Rows as a DataFrame of the model's columns: checked ones as the model takes them."""
    import pandas

    # Rows mixing numbers and strings keep each value's type, column by column.
    found = pandas.DataFrame(rows, columns=names)
    if features is None:
        return found
    # Numbers as floats (an integer past 64 bits leaves a column of objects, which XGBoost
    # refuses); categories as pandas categories in the model's own order of codes, so each
    # has its trained code whichever of them a call holds.
    types = {
        name: pandas.CategoricalDtype(feature.categories)
        if feature.kind == "category"
        else "float64"
        for name, feature in zip(names, features, strict=True)
    }
    return found.astype(types)


def bodies(
    names: list[str] | None, features: list[Feature], *, missing: bool, probabilities: bool
) -> dict[str, Any]:
    """JSON Schemas of the request and response: rows (and objects, with names) of features."""
    values = [_value_schema(feature, missing) for feature in features]
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


def _value_schema(feature: Feature, missing: bool) -> dict[str, Any]:
    """What one feature takes: JSON's null for a missing value where the model takes one."""
    if feature.kind == "category":
        return {"enum": [*feature.categories, None]}
    if feature.kind is None:  # the model checks its own input
        return {"type": ["number", "string", "boolean", "null"]}
    return {"type": ["number", "null"] if missing else "number"}
