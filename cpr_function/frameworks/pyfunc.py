"""MLflow models, loaded through their `python_function` flavor, answered as MLflow serves them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BadRequest
from ..protocol import json_type
from . import mlflow_signature as signatures

_RESPONSE = {
    "type": "object",
    "properties": {"predictions": {}},
    "required": ["predictions"],
}


def load(path: Path) -> PyFunc:
    """Loads the model whose `MLmodel` file is `path`."""
    import mlflow.pyfunc

    return PyFunc(mlflow.pyfunc.load_model(str(path.parent)))


class PyFunc:
    """An MLflow model: one of `instances`, `inputs`, `dataframe_split` or `dataframe_records`,
    and `params`, in; `{"predictions": ...}` out; the signature, when there is one, enforced."""

    def __init__(self, model):
        self._model = model
        declared = model.metadata.signature
        self.signature = signatures.parse(declared.to_dict() if declared else None)
        self._input_schema = model.metadata.get_input_schema()

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> dict[str, Any]:
        """Parses the data as MLflow's scoring server does, then predicts.

        Args:
            payload: the request body.
            vertex: the body came to a Vertex AI route; its `parameters` are the params.

        Raises:
            BadRequest: the body has no single data field, has fields MLflow does not
                take, or breaks the signature.
        """
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import infer_and_parse_data

        payload = _from_vertex(payload) if vertex else payload
        fmt = signatures.data_format(payload)
        unknown = set(payload) - {fmt, "params"}
        if unknown:
            raise BadRequest(
                f"an MLflow model takes one data field and params; also received: "
                f"{', '.join(sorted(unknown))}"
            )
        params = payload.get("params")
        if params is not None and not isinstance(params, dict):
            raise BadRequest(f'"params" must be a JSON object; received a JSON {json_type(params)}')
        if self.signature is not None:
            self.signature.check(payload)
        try:
            data = infer_and_parse_data({fmt: payload[fmt]}, self._input_schema)
            predictions = self._model.predict(data, params=params)
        except MlflowException as exc:
            if exc.error_code in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE"):
                raise BadRequest(f"{fmt}: {_reason(exc.message)}") from exc
            raise
        return {"predictions": predictions}

    def schemas(self) -> dict[str, Any]:
        """JSON Schemas of the request and response bodies, from the signature when there is one."""
        if self.signature is None:
            request = signatures.generic_request_schema()
        else:
            request = self.signature.request_schema()
        return {"request": request, "response": _RESPONSE}


def _from_vertex(payload: dict[str, Any]) -> dict[str, Any]:
    """A Vertex AI body (`instances`, `parameters`) in MLflow's terms (`instances`, `params`)."""
    extra = set(payload) - {"instances", "parameters"}
    if extra:
        raise BadRequest(
            f"a Vertex AI predict body has only instances and parameters; it also had: "
            f"{', '.join(sorted(extra))}"
        )
    body = {"instances": payload.get("instances")}
    if payload.get("parameters") is not None:
        body["params"] = payload["parameters"]
    return body


def _reason(message: str) -> str:
    """MLflow's message without the echo of the whole input it starts with."""
    return message.rpartition("Error: ")[2].strip() or message
