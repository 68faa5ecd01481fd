"""A SavedModel's signatures: their named inputs and outputs, and JSON values made tensors.

Each input's dtype and shape decide which JSON values it takes; what does not fit is
refused with the input's name, what it takes and what was received. Outputs come back
as NumPy arrays, strings decoded to text except outputs named as bytes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import protocol
from ..errors import BadRequest
from . import tensors

DEFAULT_SIGNATURE = "serving_default"
# String outputs are sent as text, except those named so, which are sent as
# {"b64": ...}: the convention AI Platform set and TF Serving kept.
BYTES_SUFFIX = "_bytes"

# The NumPy kind of each kind of tensor whose values are checked (strings are apart).
_NUMPY_KIND = {"bool": "b", "int": "i", "float": "f", "complex": "c"}
_RECEIVED = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "numbers",
    "c": "complex numbers",
    "U": "strings",
    "O": "values of mixed types, nulls or objects",
}


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
        declared = _NUMPY_KIND.get(self.kind, "O")
        unfit = array.size and not tensors.takes(declared, array.dtype.kind)
        if unfit or label == _MIXED or not tensors.fits(array.shape, self.shape):
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
