"""An MLflow model signature as plain JSON: checking request bodies against it, and JSON Schema.

The signature is the `MLmodel` file's: `inputs` is a list of column specs
(`{"name", "type", "required"}`) or of tensor specs (`{"type": "tensor",
"tensor-spec": {"dtype", "shape"}}`, named when there are several). Checking
happens on the decoded JSON, before MLflow turns it into a DataFrame or arrays,
so that a refusal names the column or tensor and the value, row and type at fault,
and so that values MLflow would quietly coerce (2.5 into a `long` column) are refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import BadRequest
from ..protocol import json_type
from . import tensors

# JSON values each MLflow column type accepts.
_ACCEPTS = {
    "double": (int, float),
    "float": (int, float),
    "long": (int,),
    "integer": (int,),
    "boolean": (bool,),
    "string": (str,),
    "binary": (str,),
    "datetime": (str,),
}
_JSON_SCHEMA = {
    "double": {"type": "number"},
    "float": {"type": "number"},
    "long": {"type": "integer"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "binary": {"type": "string", "description": "base64"},
    "datetime": {"type": "string", "format": "date-time"},
}
FORMATS = ("instances", "inputs", "dataframe_split", "dataframe_records")


@dataclasses.dataclass(frozen=True)
class Signature:
    """The inputs (columns or tensors) and params a model declares."""

    inputs: list[dict[str, Any]]
    params: list[dict[str, Any]]

    @property
    def tensors(self) -> bool:
        return bool(self.inputs) and self.inputs[0].get("type") == "tensor"

    def check(self, payload: dict[str, Any]) -> None:
        """Refuses a body whose data breaks the signature.

        Raises:
            BadRequest: a column is missing or holds a value of the wrong type, or a
                tensor has the wrong dtype or shape.
        """
        fmt = data_format(payload)
        if self.params and isinstance(payload.get("params"), dict):
            _check_params(self.params, payload["params"])
        if self.tensors:
            _check_tensors(self.inputs, payload[fmt], fmt)
        else:
            rows = _rows(payload[fmt], fmt)
            if rows == []:
                raise BadRequest(f"{fmt} holds no rows; send at least one")
            if rows is not None:
                _check_columns(self.inputs, rows, fmt)

    def request_schema(self) -> dict[str, Any]:
        """JSON Schema of a request body for this signature."""
        if self.tensors:
            rows = {t.get("name"): _tensor_schema(_row_spec(t)) for t in self.inputs}
            if list(rows) == [None]:
                row, inputs = rows[None], {"type": "array", "items": rows[None]}
            else:
                row = {"type": "object", "properties": rows, "required": list(rows)}
                inputs = {
                    "type": "object",
                    "properties": {n: {"type": "array", "items": r} for n, r in rows.items()},
                    "required": list(rows),
                }
        else:
            row = _record_schema(self.inputs)
            inputs = {
                "type": "object",
                "properties": {
                    c["name"]: {"type": "array", "items": _column_value(c)} for c in self.inputs
                },
            }
        forms = {
            "instances": {"type": "array", "items": row, "minItems": 1},
            "inputs": inputs,
        }
        if not self.tensors:
            forms["dataframe_records"] = {"type": "array", "items": row, "minItems": 1}
            forms["dataframe_split"] = {
                "type": "object",
                "properties": {
                    "columns": {
                        "type": "array",
                        "items": {"type": "string", "enum": [c["name"] for c in self.inputs]},
                    },
                    "data": {"type": "array", "items": {"type": "array"}, "minItems": 1},
                },
                "required": ["data"],
            }
        return _body_schema(forms, self.params)


def parse(signature: dict[str, Any] | None) -> Signature | None:
    """The signature as `ModelSignature.to_dict()` gives it; None when the model has none."""
    import json

    if not signature or not signature.get("inputs"):
        return None
    params = signature.get("params")
    return Signature(json.loads(signature["inputs"]), json.loads(params) if params else [])


def generic_request_schema() -> dict[str, Any]:
    """JSON Schema of a request body for a model without a signature: any of the formats."""
    forms = {
        "instances": {"type": "array", "minItems": 1},
        "inputs": {},
        "dataframe_records": {"type": "array", "items": {"type": "object"}, "minItems": 1},
        "dataframe_split": {
            "type": "object",
            "properties": {"columns": {"type": "array"}, "data": {"type": "array"}},
            "required": ["data"],
        },
    }
    return _body_schema(forms, [])


def data_format(payload: dict[str, Any]) -> str:
    """Which of MLflow's input fields the body uses.

    Raises:
        BadRequest: none of them, or more than one.
    """
    present = [f for f in FORMATS if f in payload]
    if len(present) != 1:
        received = ", ".join(sorted(payload)) or "none"
        raise BadRequest(
            f"an MLflow model takes exactly one of the fields {', '.join(FORMATS)} (and "
            f"optionally params); fields received: {received}"
        )
    return present[0]


def _body_schema(forms: dict[str, dict], params: list[dict[str, Any]]) -> dict[str, Any]:
    properties = {
        "params": {
            "type": "object",
            "properties": {p["name"]: _JSON_SCHEMA.get(p.get("type"), {}) for p in params},
            "additionalProperties": not params,
        }
    }
    return {
        "oneOf": [
            {
                "type": "object",
                "properties": {name: form, **properties},
                "required": [name],
                "additionalProperties": False,
            }
            for name, form in forms.items()
        ]
    }


def _column_value(column: dict[str, Any]) -> dict[str, Any]:
    schema = dict(_JSON_SCHEMA.get(column.get("type"), {}))
    if not column.get("required", True) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


def _record_schema(columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {c["name"]: _column_value(c) for c in columns},
        "required": [c["name"] for c in columns if c.get("required", True)],
    }


def _tensor_schema(tensor: dict[str, Any]) -> dict[str, Any]:
    kind = _dtype_kind(tensor["dtype"])
    leaf = {"f": {"type": "number"}, "i": {"type": "integer"}, "b": {"type": "boolean"}}
    schema = leaf.get(kind, {"type": "string"} if kind in "SU" else {})
    for size in reversed(tensor.get("shape") or []):
        schema = {"type": "array", "items": schema}
        if size != -1:
            schema.update(minItems=size, maxItems=size)
    return schema


def _row_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A tensor spec's dtype and shape without its batch axis: one instance."""
    tensor = spec["tensor-spec"]
    return {**tensor, "shape": list(tensor.get("shape") or [])[1:]}


def _rows(data: Any, fmt: str) -> list[dict[str, Any]] | None:
    """The body's data as records, or None when it names no columns (MLflow then decides).

    Raises:
        BadRequest: the data does not have the layout its format requires.
    """
    if fmt == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise BadRequest(
                '"dataframe_split" must be an object {"columns": [...], "data": [[...], ...]}; '
                f"received a JSON {json_type(data)}"
            )
        columns, rows = data.get("columns"), data["data"]
        if columns is None:
            return None
        if not isinstance(columns, list):
            raise BadRequest(
                f'"dataframe_split" columns must be a list of names; received a JSON '
                f"{json_type(columns)}"
            )
        for index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(columns):
                raise BadRequest(
                    f'"dataframe_split" rows must be lists of {len(columns)} values, one per '
                    f"column; row {index} is {str(row)[:100]}"
                )
        return [dict(zip(columns, r, strict=True)) for r in rows]
    if fmt == "inputs" and isinstance(data, dict):
        lengths = {len(v) if isinstance(v, list) else None for v in data.values()}
        if lengths == {None}:
            return [data]
        if None in lengths or len(lengths) != 1:
            raise BadRequest(
                '"inputs" as columns must map each column name to a list of values, all lists '
                "of the same length"
            )
        return [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    if not isinstance(data, list) or not data:
        raise BadRequest(f'"{fmt}" must be a non-empty list; received a JSON {json_type(data)}')
    if all(isinstance(r, dict) for r in data):
        return data
    if fmt == "dataframe_records":
        raise BadRequest('"dataframe_records" must be a list of objects keyed by column name')
    return None


def _check_columns(columns: list[dict[str, Any]], rows: list[dict[str, Any]], fmt: str) -> None:
    for index, row in enumerate(rows):
        for column in columns:
            name, kind = column["name"], column.get("type")
            value = row.get(name)
            if value is None:
                if not column.get("required", True):
                    continue
                if name in row:
                    raise BadRequest(
                        f"{fmt}: column {name!r} is required ({kind}) in the model's "
                        f"signature; row {index} holds null"
                    )
                raise BadRequest(
                    f"{fmt}: row {index} has no column {name!r}, which the model's "
                    f"signature requires ({kind}); columns received: "
                    f"{', '.join(map(str, row)) or 'none'}"
                )
            if not _fits(value, _ACCEPTS.get(kind), kind):
                raise BadRequest(
                    f"{fmt}: column {name!r} is {kind} in the model's signature; row {index} "
                    f"holds {json_type(value)} {str(value)[:50]!r}"
                )


def _check_params(declared: list[dict[str, Any]], given: dict[str, Any]) -> None:
    specs = {p["name"]: p for p in declared}
    for name, value in given.items():
        spec = specs.get(name)
        if spec is None:
            raise BadRequest(
                f"params: the model takes no parameter {name!r}; it takes {', '.join(specs)}"
            )
        kind = spec.get("type")
        accepted = _ACCEPTS.get(kind) if spec.get("shape") is None else (list,)
        if not _fits(value, accepted, kind):
            shown = f"{json_type(value)} {str(value)[:50]!r}" if value is not None else "null"
            raise BadRequest(
                f"params: {name!r} is {kind}{'' if spec.get('shape') is None else ' list'} in the "
                f"model's signature (default {spec.get('default')!r}); received {shown}"
            )


def _fits(value: Any, accepted: tuple[type, ...] | None, kind: str) -> bool:
    """Whether a JSON value is one of the accepted types; JSON's true and false are not
    numbers, though Python's bool is an int. No accepted types: anything fits."""
    if not accepted:
        return True
    return isinstance(value, accepted) and not (isinstance(value, bool) and kind != "boolean")


def _check_tensors(tensors: list[dict[str, Any]], data: Any, fmt: str) -> None:
    named = len(tensors) > 1 or bool(tensors[0].get("name"))
    if not named:
        _check_tensor(tensors[0], data, "the input", fmt)
        return
    if fmt == "instances" and isinstance(data, list):
        if not all(isinstance(r, dict) for r in data):
            raise BadRequest(
                f"instances must be objects keyed by the model's input names "
                f"({', '.join(t['name'] for t in tensors)})"
            )
        data = {t["name"]: [r.get(t["name"]) for r in data] for t in tensors}
    if not isinstance(data, dict):
        raise BadRequest(
            f"{fmt} must be an object keyed by the model's input names "
            f"({', '.join(t['name'] for t in tensors)}); received a JSON {json_type(data)}"
        )
    for spec in tensors:
        if data.get(spec["name"]) is None:
            raise BadRequest(
                f"{fmt}: input {spec['name']!r} is missing; the model takes "
                f"{', '.join(t['name'] for t in tensors)}"
            )
        _check_tensor(spec, data[spec["name"]], f"input {spec['name']!r}", fmt)


def _check_tensor(spec: dict[str, Any], value: Any, what: str, fmt: str) -> None:
    import numpy

    tensor = spec["tensor-spec"]
    expected = list(tensor.get("shape") or [])
    wanted = f"dtype {tensor['dtype']}, shape {expected}"
    try:
        array = numpy.asarray(value)
    except ValueError:
        raise BadRequest(
            f"{fmt}: {what} must be a rectangular array ({wanted}); received ragged lists"
        ) from None
    shape = list(array.shape)
    if shape and shape[0] == 0:
        raise BadRequest(f"{fmt}: {what} holds no instances; send at least one")
    if expected and not tensors.fits(tuple(shape), tuple(expected)):
        raise BadRequest(f"{fmt}: {what} has shape {shape}; the model's signature says {wanted}")
    if array.size and not tensors.takes(_dtype_kind(tensor["dtype"]), array.dtype.kind):
        raise BadRequest(
            f"{fmt}: {what} holds {_kind_name(array.dtype.kind)} values; the model's "
            f"signature says {wanted}"
        )


def _dtype_kind(dtype: str) -> str:
    import numpy

    try:
        return numpy.dtype(dtype).kind
    except TypeError:
        return "O"


def _kind_name(kind: str) -> str:
    names = {"f": "number", "i": "integer", "u": "integer", "b": "boolean", "U": "string"}
    return names.get(kind, "mixed")
