"""TensorFlow SavedModels, answered as TF Serving's REST API and AI Platform answered them.

A request names a signature (`signature_name`, else `serving_default`) and sends
its inputs either as rows (`{"instances": [...]}`, one entry per example, answered
with `{"predictions": [...]}`) or as columns (`{"inputs": ...}`, each input already
batched, answered with `{"outputs": ...}`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .. import protocol
from ..errors import BadRequest, LoadError
from . import keras_files, provenance

DEFAULT_SIGNATURE = "serving_default"
# String outputs are sent as text, except those named so, which are sent as
# {"b64": ...}: the convention AI Platform set and TF Serving kept.
BYTES_SUFFIX = "_bytes"

# Which JSON values (as the kinds NumPy infers from them) each kind of tensor takes.
_ACCEPTED = {"bool": "b", "int": "iu", "float": "iuf", "complex": "iufc"}
_RECEIVED = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "numbers",
    "c": "complex numbers",
    "U": "strings",
    "O": "values of mixed types, nulls or objects",
}


def load(path: Path) -> SavedModel:
    """Loads the SavedModel whose `saved_model.pb` is `path`, with its signatures.

    Raises:
        LoadError: the SavedModel has no signature to serve.
    """
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path.parent))
    except Exception as exc:
        found = keras_files.advice(path.parent)
        if found is None:
            raise
        raise LoadError(
            f"loading the SavedModel failed: {provenance.first_line(exc)}; {found}"
        ) from exc
    signatures = {name: Signature.of(name, f) for name, f in loaded.signatures.items()}
    if not signatures:
        raise LoadError(
            f"the SavedModel in {path.parent.name} has no signatures to serve; export it with "
            "tf.saved_model.save(module, path, signatures={'serving_default': module.f}) or "
            "Keras' model.export(path)"
        )
    return SavedModel(loaded, signatures)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One named input or output of a signature: its dtype and shape."""

    name: str
    dtype: Any  # a tf.DType
    shape: tuple[int | None, ...] | None  # None: not even the rank is known

    @classmethod
    def of(cls, name: str, spec) -> Spec:
        """The spec of a `tf.TensorSpec`."""
        rank = spec.shape.rank
        return cls(name, spec.dtype, None if rank is None else tuple(spec.shape.as_list()))

    @property
    def kind(self) -> str:
        """Which values fit: bool, int, float, complex, string, or other."""
        dtype = self.dtype
        if dtype.name == "string":
            return "string"
        if dtype.is_bool:
            return "bool"
        if dtype.is_integer:
            return "int"
        if dtype.is_floating:
            return "float"
        return "complex" if dtype.is_complex else "other"

    def describe(self, *, rows: bool = False) -> str:
        """E.g. `float32 of shape [-1, 4], each instance of shape [4]`."""
        if self.shape is None:
            return f"{self.dtype.name} of any shape"
        text = f"{self.dtype.name} of shape {_shape_text(self.shape)}"
        if not rows:
            return text
        each = self.shape[1:]
        return text + (
            f", each instance of shape {_shape_text(each)}" if each else ", one value each"
        )

    def array(self, value: Any, *, rows: bool = False):
        """`value`, a batch of JSON values, as a NumPy array of this dtype and shape.

        Args:
            value: the batch; for a string input, `{"b64": ...}` leaves are decoded.
            rows: the batch was gathered from instances, which errors then say.

        Raises:
            BadRequest: the values do not convert to the dtype, or the shape differs;
                the message names the input, what it takes and what was received.
        """
        import numpy

        try:
            return self._convert(numpy, value)
        except _Unfit as exc:
            raise BadRequest(
                f"input {self.name!r} takes {self.describe(rows=rows)}; received {exc}"
            ) from None

    def _convert(self, numpy, value):
        array, label = self._parse(numpy, value)
        accepted = _ACCEPTED.get(self.kind)
        unfit = array.size and accepted is not None and array.dtype.kind not in accepted
        if unfit or label == _MIXED or not _fits(array.shape, self.shape):
            raise _Unfit(f"{label} of shape {list(array.shape)}")
        target = numpy.dtype(self.dtype.as_numpy_dtype)
        if self.kind == "int" and array.size:
            info = numpy.iinfo(target)
            if array.min() < info.min or array.max() > info.max:
                raise _Unfit(
                    f"integers outside the {self.dtype.name} range [{info.min}, {info.max}]"
                )
        try:
            return array.astype(target, copy=False)
        except (ValueError, TypeError) as exc:
            raise _Unfit(f"values that do not convert: {exc}") from None

    def _parse(self, numpy, value):
        """The values as NumPy reads them, and what to call them in an error."""
        if self.kind == "string":
            return _strings(numpy, protocol.decode_b64(value)), "strings"
        try:
            array = numpy.asarray(value)
        except (ValueError, TypeError, OverflowError):
            raise _Unfit(_RAGGED) from None
        if array.dtype.kind in "iufc" and _has_booleans(numpy, value):
            return array, _MIXED
        return array, _RECEIVED.get(array.dtype.kind, "values")


class _Unfit(Exception):
    """What was received, when it does not convert to an input's dtype."""


_RAGGED = "nested lists of unequal lengths or of mixed types, which form no array"
_MIXED = "numbers mixed with booleans"


def _strings(numpy, value):
    array = numpy.asarray(value, dtype=object)
    for leaf in array.flat:
        if isinstance(leaf, list):
            raise _Unfit(_RAGGED)
        if not isinstance(leaf, str | bytes):
            raise _Unfit(f"a JSON {protocol.json_type(leaf)} among the values")
    return array


def _has_booleans(numpy, value) -> bool:
    """JSON true or false among numbers, which NumPy would quietly take as 1 and 0."""
    return bool in map(type, numpy.asarray(value, dtype=object).flat)


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...] | None) -> bool:
    if expected is None:
        return True
    if len(shape) != len(expected):
        return False
    return all(e in (None, s) for s, e in zip(shape, expected, strict=True))


def _shape_text(shape) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


@dataclasses.dataclass(frozen=True)
class Signature:
    """One signature of a SavedModel: its concrete function and named inputs and outputs."""

    name: str
    function: Any
    inputs: dict[str, Spec]
    outputs: dict[str, Spec]

    @classmethod
    def of(cls, name: str, function) -> Signature:
        """The signature of a concrete function from `loaded.signatures`."""
        _, inputs = function.structured_input_signature
        outputs = function.structured_outputs
        return cls(
            name,
            function,
            {k: Spec.of(k, s) for k, s in sorted(inputs.items())},
            {k: Spec.of(k, s) for k, s in sorted(outputs.items())},
        )

    def describe(self, *, rows: bool = False) -> str:
        """Its inputs and what each takes, for error messages."""
        return "; ".join(f"{n} ({s.describe(rows=rows)})" for n, s in self.inputs.items())

    def __call__(self, arrays: dict[str, Any]) -> dict[str, Any]:
        """Runs the function on a batch; NumPy arrays in, NumPy arrays out."""
        import tensorflow as tf

        tensors = {n: tf.constant(a, dtype=self.inputs[n].dtype) for n, a in arrays.items()}
        try:
            results = self.function(**tensors)
        except tf.errors.InvalidArgumentError as exc:
            # TF Serving answers 400 when the model's own ops refuse the data.
            reason = _reason(exc.message or str(exc))
            raise BadRequest(f"signature {self.name!r} refused the inputs: {reason}") from exc
        return {n: _output(n, t.numpy()) for n, t in results.items()}


_TRACE = ("Graph execution error", "Detected at node", "<stack traces", "File ", "[[")


def _reason(message: str) -> str:
    """The failing op's own words in a TensorFlow error, without the graph trace around them."""
    lines = [line.strip() for line in message.splitlines()]
    said = [line for line in lines if line and not line.startswith(_TRACE)]
    return (said[-1] if said else message.strip()).split("[[")[0].strip()


def _output(name: str, value):
    """An output as a NumPy array; strings decoded to text, except bytes outputs and
    what is not UTF-8."""
    import numpy

    array = numpy.asarray(value)
    if array.dtype != object or name.endswith(BYTES_SUFFIX):
        return array
    return numpy.asarray(numpy.frompyfunc(_decoded, 1, 1)(array), dtype=object)


def _decoded(value):
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value  # sent as {"b64": ...}: JSON has no other way to carry it


class SavedModel:
    """A loaded SavedModel answering TF Serving's row and columnar request bodies."""

    def __init__(self, loaded: Any, signatures: dict[str, Signature]):
        self._loaded = loaded  # owns the variables the signatures' functions capture
        self.signatures = signatures

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> dict[str, Any]:
        """Predicts on a request body in TF Serving's row or columnar format.

        Args:
            payload: the decoded request body.
            vertex: the body came to a Vertex AI route, whose bodies carry
                `instances` and `parameters` only.

        Raises:
            BadRequest: the body names an unknown signature, has neither or both of
                `instances` and `inputs`, or its values do not fit the signature, or
                an output has no row per instance to answer instances with.
        """
        if vertex:
            _check_vertex(payload)
        signature = self.signature(payload.get("signature_name", DEFAULT_SIGNATURE))
        if "instances" in payload and "inputs" in payload:
            raise BadRequest(
                'send either "instances" (a list, one entry per example) or "inputs" '
                "(each input already batched), not both"
            )
        if "instances" in payload:
            instances = _instances(payload["instances"])
            outputs = signature(_rows(signature, instances))
            return {"predictions": _predictions(signature, outputs, len(instances))}
        if "inputs" in payload:
            outputs = signature(_columns(signature, payload["inputs"]))
            return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
        raise BadRequest(
            'request body has neither "instances" nor "inputs"; expected {"instances": [...]} '
            'with one entry per example, or {"inputs": ...} with each input batched; fields '
            f"received: {', '.join(sorted(payload)) or 'none'}"
        )

    def signature(self, name: Any) -> Signature:
        """The signature named `name`.

        Raises:
            BadRequest: `name` is not a string, or the SavedModel has no such signature.
        """
        if not isinstance(name, str):
            raise BadRequest(
                f'"signature_name" must be a string; received a JSON {protocol.json_type(name)}'
            )
        if name not in self.signatures:
            raise BadRequest(
                f"the SavedModel has no signature named {name!r}; its signatures: "
                f"{', '.join(sorted(self.signatures)) or 'none'}"
            )
        return self.signatures[name]

    def schemas(self) -> dict[str, Any]:
        """JSON Schemas of the request and response bodies, any of the signatures' bodies.

        Returns:
            `{"request": ..., "response": ...}`; `serving_default` first, the only one
            a body may leave `signature_name` out for.
        """
        from . import savedmodel_schemas

        ordered = sorted(self.signatures.values(), key=lambda s: s.name != DEFAULT_SIGNATURE)
        return savedmodel_schemas.bodies(ordered)


def _check_vertex(payload: dict[str, Any]) -> None:
    # Vertex AI's API carries instances and parameters only, so neither inputs nor
    # signature_name can come this way. Its TensorFlow containers hand the instances
    # to TF Serving, which has no parameters: they are ignored here as they were there.
    extra = set(payload) - {"instances", "parameters"}
    if extra:
        raise BadRequest(
            f"a Vertex AI predict body has only instances and parameters; it also had: "
            f"{', '.join(sorted(extra))}"
        )
    if "instances" not in payload:
        raise BadRequest('a Vertex AI predict body needs "instances", a list of examples')


def _instances(instances: Any) -> list:
    if not isinstance(instances, list):
        raise BadRequest(
            f'"instances" must be a list; received a JSON {protocol.json_type(instances)}'
        )
    if not instances:
        raise BadRequest('"instances" is an empty list; send at least one instance')
    return instances


def _named(value: Any) -> bool:
    """An object keyed by input names, rather than one value (a `{"b64": ...}` is a value)."""
    return isinstance(value, dict) and not (len(value) == 1 and "b64" in value)


def _rows(signature: Signature, instances: list) -> dict[str, Any]:
    """The inputs batched from instances: plain values for a single input, else objects."""
    names = list(signature.inputs)
    if len(names) == 1 and not _named(instances[0]):
        if any(_named(i) for i in instances):
            raise BadRequest(
                "instances must be all plain values or all objects keyed by input name; "
                f"instance {next(n for n, i in enumerate(instances) if _named(i))} is an object"
            )
        return {names[0]: signature.inputs[names[0]].array(instances, rows=True)}
    columns: dict[str, list] = {name: [] for name in names}
    for index, instance in enumerate(instances):
        if not _named(instance):
            raise BadRequest(
                f"signature {signature.name!r} takes inputs {signature.describe(rows=True)}: "
                f"each instance must be an object keyed by those names; instance {index} is a "
                f"JSON {protocol.json_type(instance)}"
            )
        _check_names(signature, instance, f"instance {index}", rows=True)
        for name in names:
            columns[name].append(instance[name])
    return {n: signature.inputs[n].array(columns[n], rows=True) for n in names}


def _columns(signature: Signature, inputs: Any) -> dict[str, Any]:
    """The inputs of a columnar body: one batched value, or an object of them by name."""
    names = list(signature.inputs)
    if not _named(inputs):
        if len(names) != 1:
            raise BadRequest(
                f"signature {signature.name!r} takes inputs {signature.describe()}: "
                f'"inputs" must be an object keyed by those names; received a JSON '
                f"{protocol.json_type(inputs)}"
            )
        inputs = {names[0]: inputs}
    _check_names(signature, inputs, '"inputs"')
    return {n: signature.inputs[n].array(inputs[n]) for n in names}


def _check_names(signature: Signature, given: dict, where: str, *, rows: bool = False) -> None:
    missing = [n for n in signature.inputs if n not in given]
    unknown = sorted(set(given) - set(signature.inputs))
    if missing or unknown:
        problems = [f"lacks {', '.join(missing)}"] if missing else []
        problems += [f"has unknown {', '.join(unknown)}"] if unknown else []
        raise BadRequest(
            f"{where} {' and '.join(problems)}; signature {signature.name!r} takes inputs "
            f"{signature.describe(rows=rows)}"
        )


def _predictions(signature: Signature, outputs: dict[str, Any], count: int) -> Any:
    """One prediction per instance: the output's row, or an object of every output's row.

    Raises:
        BadRequest: an output has no row per instance; as TF Serving, the format the
            request chose cannot be answered, and columns can.
    """
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != count:
            raise BadRequest(
                f"output {name!r} of signature {signature.name!r} has shape "
                f"{list(array.shape)}, which does not split into one row per instance for "
                f'{count} instances; send {{"inputs": ...}} to receive outputs whole'
            )
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    return [{n: a[i] for n, a in outputs.items()} for i in range(count)]
