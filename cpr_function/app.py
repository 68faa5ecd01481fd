"""The HTTP surface: route a request, decode it, predict, encode the answer or the error."""

from __future__ import annotations

import logging
from typing import Any

from . import protocol
from .config import Config
from .errors import CprError, MethodNotAllowed, NotFound
from .model import LazyModel
from .storage import Storage

log = logging.getLogger(__name__)

_JSON = "application/json"


class App:
    """The composition root: wires configuration, storage and the model to HTTP."""

    def __init__(self, config: Config, *, storage: Storage | None = None):
        self.config = config
        self.model = LazyModel(config, storage or Storage(config.cache_dir))

    def __call__(self, request) -> Any:
        """Answers one Flask request; every error becomes `{"error": ...}` here and only here."""
        import flask

        try:
            status, body = self._route(request)
        except CprError as exc:
            if exc.status_code >= 500:
                log.error("%s %s -> %d: %s", request.method, request.path, exc.status_code, exc)
            status, body = exc.status_code, protocol.error_body(str(exc))
            headers = {"Allow": exc.allow} if isinstance(exc, _NotAllowed) else {}
            return flask.Response(body, status=status, mimetype=_JSON, headers=headers)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            body = protocol.error_body("internal error; the details are in the function's log")
            return flask.Response(body, status=500, mimetype=_JSON)
        return flask.Response(body, status=status, mimetype=_JSON)

    def _route(self, request) -> tuple[int, bytes]:
        path = request.path.rstrip("/")
        if path == "" or path.endswith("/predict"):
            allowed = ("GET", "POST") if path == "" else ("POST",)
            if request.method not in allowed:
                raise _NotAllowed(request.method, path or "/", allowed)
            if request.method == "GET":
                return 200, protocol.encode(self.status())
            return 200, self._predict(request)
        raise NotFound(
            f"no route for {request.path}; expected POST / or POST /predict, or GET / for status"
        )

    def _predict(self, request) -> bytes:
        body = protocol.read_body(
            request.stream, request.content_length, self.config.max_request_bytes
        )
        instances, kwargs = protocol.parse_predict(body)
        predictions = self.model.predict(instances, kwargs)
        return protocol.encode({"predictions": predictions})

    def status(self) -> dict[str, Any]:
        """The body of `GET /`."""
        return {"config": self.config.describe(), **self.model.status()}


class _NotAllowed(MethodNotAllowed):
    def __init__(self, method: str, path: str, allowed: tuple[str, ...]):
        super().__init__(f"{method} is not allowed on {path}; use {' or '.join(allowed)}")
        self.allow = ", ".join(allowed)
