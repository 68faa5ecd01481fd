"""JSON Schemas of a SavedModel's request and response bodies, from its signatures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .savedmodel_signatures import BYTES_SUFFIX, DEFAULT_SIGNATURE

if TYPE_CHECKING:
    from .savedmodel_signatures import Signature, Spec


def bodies(signatures: list[Signature]) -> dict[str, Any]:
    """`{"request": ..., "response": ...}`: any of the signatures' bodies, the first one's
    the only one that may leave `signature_name` out."""
    return {
        "request": _either([_request_schema(s) for s in signatures]),
        "response": _either([_response_schema(s) for s in signatures]),
    }


def _either(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _request_schema(signature: Signature) -> dict[str, Any]:
    """A body for one signature: its name, and rows or columns (columns only when an
    output has no row per instance)."""
    inputs = signature.inputs
    named = {
        "type": "object",
        "properties": {n: _value_schema(s, rows=True) for n, s in inputs.items()},
        "required": list(inputs),
        "additionalProperties": False,
    }
    batched = {**named, "properties": {n: _value_schema(s) for n, s in inputs.items()}}
    if len(inputs) == 1:
        [only] = inputs.values()
        instance = {"anyOf": [_value_schema(only, rows=True), named]}
        columns = {"anyOf": [_value_schema(only), batched]}
    else:
        instance, columns = named, batched
    formats = {
        "instances": {
            "type": "array",
            "minItems": 1,
            "items": instance,
            "description": "one entry per example (row format)",
        },
        "inputs": {**columns, "description": "each input already batched (columnar format)"},
    }
    schema = _formats(signature, formats)
    schema["properties"]["signature_name"] = {"const": signature.name, "type": "string"}
    schema["description"] = f"signature {signature.name}: {signature.describe()}"
    if signature.name != DEFAULT_SIGNATURE:
        schema["required"] = [*schema.get("required", []), "signature_name"]
    return schema


def _response_schema(signature: Signature) -> dict[str, Any]:
    """What one signature answers: `predictions` for rows, `outputs` for columns."""
    outputs = signature.outputs

    def each(rows: bool) -> dict[str, Any]:
        if len(outputs) == 1:
            [only] = outputs.values()
            return _value_schema(only, rows=rows, output=True)
        return {
            "type": "object",
            "properties": {n: _value_schema(s, rows=rows, output=True) for n, s in outputs.items()},
            "required": list(outputs),
        }

    formats = {
        "predictions": {"type": "array", "items": each(rows=True)},
        "outputs": each(rows=False),
    }
    return {**_formats(signature, formats), "description": f"signature {signature.name}"}


def _formats(signature: Signature, formats: dict[str, Any]) -> dict[str, Any]:
    """An object with exactly one of the row format's field and the columnar format's."""
    (rows, row_schema), (columns, column_schema) = formats.items()
    if not _answers_rows(signature):
        return {"type": "object", "properties": {columns: column_schema}, "required": [columns]}
    return {
        "type": "object",
        "properties": dict(formats),
        "oneOf": [{"required": [rows]}, {"required": [columns]}],
    }


def _answers_rows(signature: Signature) -> bool:
    """Every output has a batch dimension to split into one prediction per instance."""
    return all(o.shape is None or len(o.shape) > 0 for o in signature.outputs.values())


def _value_schema(spec: Spec, *, rows: bool = False, output: bool = False) -> dict[str, Any]:
    """The JSON Schema of a tensor's value: nested arrays of the dtype's JSON values.

    Args:
        spec: the tensor.
        rows: describe one instance's value, without the batch dimension.
        output: describe the value as responses encode it, not as requests send it.
    """
    schema = _output_leaf(spec) if output else _input_leaf(spec)
    if spec.shape is None:
        return {"anyOf": [schema, {"type": "array"}], "description": spec.describe()}
    dims = spec.shape[1:] if rows else spec.shape
    for depth in reversed(range(len(dims))):
        if dims[depth] is not None:
            sized = {"minItems": dims[depth], "maxItems": dims[depth]}
        elif depth < len(dims) - 1 and not output:
            # An empty list has no inner dimensions, so only the innermost may be empty.
            sized = {"minItems": 1}
        else:
            sized = {}
        schema = {"type": "array", "items": schema, **sized}
    return schema


def _input_leaf(spec: Spec) -> dict[str, Any]:
    if spec.kind == "string":
        return {"anyOf": [{"type": "string"}, _b64_schema()]}
    if spec.kind == "int":
        import numpy

        info = numpy.iinfo(spec.dtype.as_numpy_dtype)
        return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max)}
    return {"bool": {"type": "boolean"}, "float": {"type": "number"}}.get(spec.kind, {})


def _output_leaf(spec: Spec) -> dict[str, Any]:
    if spec.kind == "string":
        if spec.name.endswith(BYTES_SUFFIX):
            return _b64_schema()
        return {"anyOf": [{"type": "string"}, _b64_schema()]}
    # Not-a-number and infinities have no JSON form: they are sent as null.
    return {
        "bool": {"type": "boolean"},
        "int": {"type": "integer"},
        "float": {"type": ["number", "null"]},
    }.get(spec.kind, {})


def _b64_schema() -> dict[str, Any]:
    """`{"b64": "<base64>"}`, how bytes travel in JSON; a new dict each time, as callers may
    change the schemas they are given."""
    return {
        "type": "object",
        "properties": {"b64": {"type": "string", "contentEncoding": "base64"}},
        "required": ["b64"],
        "additionalProperties": False,
    }
