"""The JSON wire format: request bodies in, predictions and errors out."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson

from .errors import BadRequest, PredictorError, TooLarge

_READ_CHUNK = 1 << 16


def read_body(stream, content_length: int | None, max_bytes: int) -> bytes:
    """Reads a request body, refusing it as soon as it passes `max_bytes`.

    Raises:
        TooLarge: the body is larger than `max_bytes`.
    """
    if content_length is not None and content_length > max_bytes:
        raise TooLarge(_too_large(content_length, max_bytes))
    parts, size = [], 0
    if content_length is not None:
        # The host's stream ends at the declared length, so one read takes the whole
        # body and the loop below, with its read that finds the end, is not needed.
        body = stream.read(content_length)
        if len(body) == content_length:
            return body
        parts, size = [body], len(body)
    while chunk := stream.read(min(_READ_CHUNK, max_bytes + 1 - size) or 1):
        parts.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(_too_large(f"more than {max_bytes}", max_bytes))
    return b"".join(parts)


def _too_large(size, max_bytes: int) -> str:
    return (
        f"request body is {size} bytes; at most {max_bytes} bytes are accepted "
        "(CPR_MAX_REQUEST_BYTES); split the instances over several requests"
    )


class PlainBody(dict):
    """A decoded body whose text holds no `{"b64": ...}` object, so `instances_of` need not
    walk its instances to find one. The walk took 30 us for 100 instances of 4 numbers,
    three times what orjson took to decode the body."""

    __slots__ = ()


def parse_body(body: bytes) -> dict[str, Any]:
    """Decodes a predict body, which must be a JSON object.

    Returns:
        The object; a `PlainBody` when its text cannot hold a `"b64"` key (no `b64` in it,
        and no `\\u` escape that could spell one).

    Raises:
        BadRequest: the body is empty, not JSON, or not a JSON object.
    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not body.strip():  # only now: stripping copies the body
            raise BadRequest(
                'request body is empty; expected a JSON object {"instances": [...]}'
            ) from None
        raise BadRequest(
            f'request body is not valid JSON ({exc}); expected {{"instances": [...]}}'
        ) from None
    if not isinstance(payload, dict):
        raise BadRequest(
            f"request body is a JSON {json_type(payload)}; "
            'expected an object {"instances": [...]}'
        )
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _too_deep(body):
        raise BadRequest(
            f"request body nests arrays and objects more than {MAX_DEPTH} levels deep; "
            "flatten the instances"
        )
    if b"b64" not in body and b"\\u" not in body:
        return PlainBody(payload)
    return payload


# Deeper input than this is refused, so that no answer is too deep to encode
# (the encoder stops at 254 levels) and no walk over it recurses too far.
MAX_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(body: bytes) -> bool:
    """Whether a valid JSON body nests deeper than MAX_DEPTH, found by peeling off the
    innermost empty pairs of brackets once per level, outside strings."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
    return bool(brackets)


def instances_of(payload: dict[str, Any], *, vertex: bool = False) -> tuple[list, dict[str, Any]]:
    """Splits a predict body into its instances and the keyword arguments for `predict`.

    Args:
        payload: the decoded body; left unchanged.
        vertex: the body came to a Vertex AI route: only `instances` and
            `parameters` may be there, and `parameters` holds the keyword arguments.
            Otherwise every top-level field but `instances` is one, as in AI Platform.

    Returns:
        The instances with `{"b64": ...}` leaves decoded to bytes, and the keyword arguments.

    Raises:
        BadRequest: there is no non-empty `instances` list, or the other fields are wrong.
    """
    fields = dict(payload)
    if "instances" not in fields:
        received = ", ".join(sorted(fields)) or "none"
        raise BadRequest(f'request body has no "instances" field; fields received: {received}')
    instances = fields.pop("instances")
    if not isinstance(instances, list):
        raise BadRequest(f'"instances" must be a list; received a JSON {json_type(instances)}')
    if not instances:
        raise BadRequest('"instances" is an empty list; send at least one instance')
    instances = list(instances) if isinstance(payload, PlainBody) else decode_b64(instances)
    kwargs = _parameters(fields) if vertex else fields
    if "self" in kwargs:
        where = '"parameters"' if vertex else "the body's top-level fields"
        raise BadRequest(
            f'{where} may not name "self": each becomes a keyword argument of the '
            "predictor's predict(instances, **kwargs), whose first parameter is self"
        )
    return instances, kwargs


def _parameters(fields: dict[str, Any]) -> dict[str, Any]:
    parameters = fields.pop("parameters", None)
    if fields:
        raise BadRequest(
            f"a Vertex AI predict body has only instances and parameters; it also had: "
            f"{', '.join(sorted(fields))}"
        )
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(
            f'"parameters" must be a JSON object of keyword arguments; received a JSON '
            f"{json_type(parameters)}"
        )
    return parameters


def count(payload: dict[str, Any]) -> int | None:
    """How many instances a body holds, for the request log; None when it has no list."""
    instances = payload.get("instances", payload.get("inputs"))
    return len(instances) if isinstance(instances, list) else None


def decode_b64(value):
    """`value` with every `{"b64": "<base64>"}` leaf decoded to bytes.

    Raises:
        BadRequest: a b64 value is not base64, or the value is nested too deeply.
    """
    try:
        return _decode(value)
    except RecursionError:
        raise BadRequest("instances are nested too deeply to decode") from None


def _decode(value):
    # Only lists and objects are descended into: a call per number would cost more than
    # the rest of a small request's decoding.
    if isinstance(value, list):
        return [_decode(v) if isinstance(v, _NESTED) else v for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and "b64" in value:
            return _b64_bytes(value["b64"])
        return {k: _decode(v) if isinstance(v, _NESTED) else v for k, v in value.items()}
    return value


_NESTED = (list, dict)


def _b64_bytes(text) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(
            f'a {{"b64": ...}} value must be a base64 string; received a JSON {json_type(text)}'
        )
    for altchars in (None, b"-_"):
        try:
            return base64.b64decode(text, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            pass
    shown = text if len(text) <= 40 else text[:40] + "..."
    raise BadRequest(f'{{"b64": "{shown}"}} is not valid base64')


def dumps(value: Any) -> bytes:
    """Encodes one value the way responses are encoded; bytes become `{"b64": ...}`.

    Raises:
        orjson.JSONEncodeError: the value has no JSON form.
    """
    return orjson.dumps(value, default=_default, option=_OPTIONS)


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def encode(payload: Any) -> bytes:
    """Encodes a response body; NumPy, pandas and bytes values included.

    Raises:
        PredictorError: a value has no JSON form.
    """
    try:
        return dumps(payload)
    except orjson.JSONEncodeError:
        pass
    try:
        # Slow path: keys orjson cannot take (NumPy scalars) become their string form.
        return dumps(_str_keys(payload))
    except (orjson.JSONEncodeError, RecursionError) as exc:
        raise PredictorError(
            f"the predictor's output cannot be encoded as JSON: {exc}; return lists, "
            "numbers, strings, bytes, dicts, NumPy arrays or pandas objects"
        ) from None


def _str_keys(value):
    if isinstance(value, dict):
        return {_key(k): _str_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_str_keys(v) for v in value]
    return value


def _key(key):
    if isinstance(key, str | int | float | bool) or key is None:
        return key
    return str(key.item()) if hasattr(key, "item") else str(key)


def _default(value):
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, set | frozenset):
        return list(value)
    module = type(value).__module__.split(".")[0]
    if module == "pandas":
        return _pandas(value)
    if hasattr(value, "tolist"):  # NumPy arrays it cannot take whole, NumPy scalars
        return value.tolist()
    if module == "decimal":
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(
        f"Type is not JSON serializable: {type(value).__module__}.{type(value).__name__}"
    )


def _pandas(value):
    import pandas

    if isinstance(value, pandas.DataFrame):
        return value.to_dict(orient="records")
    if value is pandas.NaT or value is pandas.NA:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Type is not JSON serializable: pandas {type(value).__name__}")


def json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


# google.rpc status names for the HTTP statuses we answer with.
_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",  # the request's body did not arrive in time
    413: "INVALID_ARGUMENT",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    507: "RESOURCE_EXHAUSTED",
}


def error_body(message: str, status: int = 500, *, google: bool = False) -> bytes:
    """The body of every error response.

    Args:
        message: what went wrong, what was expected and what was received.
        status: the HTTP status it goes with.
        google: use Google's error shape, `{"error": {"code", "message", "status"}}`,
            which Google's client libraries parse into their exceptions; otherwise
            `{"error": message}`.
    """
    if google:
        rpc = _RPC_STATUS.get(status, "UNKNOWN")
        return orjson.dumps({"error": {"code": status, "message": message, "status": rpc}})
    return orjson.dumps({"error": message})
