"""The OpenAPI 3.1 document of a version's predict route, from the schemas its model declares."""

from __future__ import annotations

from typing import Any

# What any version takes when its model declares nothing: AI Platform's body.
_INSTANCES = {
    "type": "object",
    "properties": {"instances": {"type": "array", "minItems": 1}},
    "required": ["instances"],
    "description": "Every other field is passed to predict() as a keyword argument.",
}
_PREDICTIONS = {
    "type": "object",
    "properties": {"predictions": {"type": "array"}},
    "required": ["predictions"],
}
_FLAT_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_GOOGLE_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "status": {"type": "string"},
            },
            "required": ["code", "message", "status"],
        }
    },
    "required": ["error"],
}
_ERRORS = {
    "400": "the body is malformed or does not fit the model's signature",
    "404": "no such model or version",
    "413": "the body is larger than CPR_MAX_REQUEST_BYTES",
    "500": "the model failed to load, or its predictor raised",
    "502": "a forwarded request failed upstream",
    "503": "the upstream of a forward is unavailable",
    "504": "the upstream of a forward timed out",
}


def document(
    *,
    title: str,
    server: str,
    paths: list[str],
    schemas: dict[str, Any] | None,
    google_errors: bool = False,
) -> dict[str, Any]:
    """An OpenAPI 3.1 document with one POST operation per path, all alike.

    Args:
        title: names the model and version.
        server: the URL prefix the paths are under (a Cloud Functions URL's path).
        paths: the predict routes to describe.
        schemas: `{"request": ..., "response": ...}` JSON Schemas the model
            declares, or None for AI Platform's `{"instances": [...]}` body.
        google_errors: errors on these paths have Google's shape.
    """
    request = schemas["request"] if schemas else _INSTANCES
    response = schemas["response"] if schemas else _PREDICTIONS
    error = {
        "content": {"application/json": {"schema": _GOOGLE_ERROR if google_errors else _FLAT_ERROR}}
    }
    operation = {
        "summary": f"Predict with {title}",
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": {
                "description": "the predictions",
                "content": {"application/json": {"schema": response}},
            },
            **{code: {"description": why, **error} for code, why in _ERRORS.items()},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "servers": [{"url": server or "/"}],
        "paths": {
            path: {"post": {**operation, "operationId": f"predict{i}"}}
            for i, path in enumerate(paths)
        },
    }
