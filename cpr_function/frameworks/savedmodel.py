"""TensorFlow SavedModels, answered as TF Serving's REST API and AI Platform answered them.

A request names a signature (`signature_name`, else `serving_default`) and sends
its inputs either as rows (`{"instances": [...]}`, one entry per example, answered
with `{"predictions": [...]}`) or as columns (`{"inputs": ...}`, each input already
batched, answered with `{"outputs": ...}`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import protocol
from ..compat import keras_files, provenance
from ..errors import BadRequest, LoadError
from . import savedmodel_schemas
from .savedmodel_signatures import DEFAULT_SIGNATURE, Signature


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
