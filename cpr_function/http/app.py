"""The composition root and the HTTP envelope: a request routed to its handler, its answer
encoded, every error answered here and only here, the request logged."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from .. import logs, models_file, protocol
from ..catalog import Catalog
from ..config import Config
from ..errors import CprError, MethodNotAllowed, echo, host_timeout
from ..loading.storage import Storage
from ..serving.registry import Registry
from . import routes
from .handlers import Handlers

log = logging.getLogger(__name__)

_JSON = "application/json"
_REST_CHUNK = 1 << 20  # gunicorn's largest read from the socket


class App:
    """The composition root: wires configuration, storage and the models to HTTP."""

    def __init__(self, config: Config, *, storage: Storage | None = None):
        self.config = config
        storage = storage or Storage.configured(config)
        self.catalog = load_catalog(config)
        self.registry = Registry(self.catalog, config, storage)
        self._gate = _gate(config)
        handlers = Handlers(config, self.catalog, self.registry)
        self._local_paths = [
            (str(config.cache_dir.resolve()), "<cache>"),
            (str(config.cache_dir), "<cache>"),
            (str(Path(__file__).resolve().parents[2]), "<function>"),
        ]
        self._actions = {
            "status": handlers.status,
            "health": handlers.health,
            "predict": handlers.predict,
            "vertex_predict": handlers.vertex_predict,
            "list_models": handlers.list_models,
            "get_model": handlers.get_model,
            "list_versions": handlers.list_versions,
            "get_version": handlers.get_version,
            "get_endpoint": handlers.get_endpoint,
            "openapi": handlers.openapi,
        }

    def __call__(self, request) -> Any:
        """Answers one Flask request; every error becomes `{"error": ...}` here and only here."""
        import flask

        started = time.perf_counter()
        # From the WSGI environ: `request.headers` raises and catches a KeyError per absent header.
        trace = logs.trace_from(request.environ.get("HTTP_X_CLOUD_TRACE_CONTEXT"))
        token = logs.TRACE.set(trace)
        note, status = {}, 500  # the status logged if answering raised
        try:
            status, body, headers = self._answer(request, note)
            return flask.Response(body, status=status, mimetype=_JSON, headers=headers)
        finally:
            if self.config.logs_request(status):
                _log_request(request, status, time.perf_counter() - started, note)
            logs.TRACE.reset(token)

    def _answer(self, request, note: dict) -> tuple[int, bytes, dict]:
        """The status, body and headers answering the request, its errors included."""
        try:
            status, body = self._route(request, note)
            answer = status, body, {}
            if request.method == "POST":  # the routes that take a body have read it
                return answer
        except Exception as exc:
            answer = self._error(request, exc)
        # functions-framework reads the rest of every body once the answer is made, with no
        # bound but the body's deadline, and a late body would crash the request there: it
        # is read here first. The answer stays; a late body closes the connection after it.
        _read_rest(request)
        return answer

    def _error(self, request, exc: Exception) -> tuple[int, bytes, dict]:
        """The answer to an error: a CprError's own status and message, or a 500 that says
        no more than that the log has the details."""
        # functions-framework's deadline, wherever in the request it fell: waiting for a
        # forwarded call or a version's own process, say (in a predictor: serving.model).
        exc = host_timeout(exc) or exc
        if not isinstance(exc, CprError):
            log.error("unexpected error on %s %s", request.method, echo(request.path), exc_info=exc)
            message = "internal error; the details are in the function's log"
            return 500, protocol.error_body(message, 500, google=_google(request.path)), {}
        if exc.status_code >= 500:
            log.error("%s %s -> %d: %s", request.method, echo(request.path), exc.status_code, exc)
        status, message = exc.status_code, self._without_local_paths(str(exc))
        body = protocol.error_body(message, status, google=_google(request.path))
        return status, body, exc.headers

    def _without_local_paths(self, message: str) -> str:
        """The message with this machine's cache and code directories named, not spelled out:
        a caller learns what failed, not how the server's disk is laid out."""
        for path, name in self._local_paths:
            message = message.replace(path, name)
        return message

    def refused(self, exc) -> Any:
        """The JSON answer to a request the host refused before routing it here."""
        import flask

        request = flask.request
        status = exc.code or 500
        _read_rest(request)  # as `_answer` does
        if status == 404:
            message = f"no route for {echo(request.path)!r}; expected POST / or POST /predict"
        else:
            message = f"{exc.name}: the request was refused before it reached the model"
        if self.config.logs_request(status):
            log.info("%s %s -> %d refused by the host", request.method, echo(request.path), status)
        body = protocol.error_body(message, status, google=_google(request.path))
        return flask.Response(body, status=status, mimetype=_JSON)

    def _route(self, request, note: dict) -> tuple[int, bytes]:
        route = routes.match(request.path)
        action = route.actions.get(request.method)
        if self._gate is not None and action != "health":
            urls = _urls(request, self.config.service_name)
            note["caller"] = self._gate.admit(request.environ.get("HTTP_AUTHORIZATION"), urls)
        if action is None:
            raise _NotAllowed(request.method, route.path, tuple(route.actions))
        return 200, protocol.encode(self._actions[action](request, route, note))

    def warm_up(self) -> None:
        """Loads the versions `CPR_WARMUP` names in a background thread of this process.

        Called in each worker right after gunicorn forks it, never in the master.
        """
        import threading

        if self.config.warmup == "all":
            specs = [v for v in self.catalog.versions() if v.in_process]
        else:
            specs = [self.catalog.model().version()]

        def run() -> None:
            for spec in specs:
                log.info(
                    "warm-up: loading model %s version %s in process %d",
                    spec.model,
                    spec.name,
                    os.getpid(),
                )
                try:
                    self.registry.load(spec)
                except CprError as exc:
                    log.error("warm-up of %s failed: %s", spec.key, exc)

        threading.Thread(target=run, name="cpr-warmup", daemon=True).start()


def load_catalog(config: Config) -> Catalog:
    """The configured models: from the single-model settings, or the `CPR_MODELS` file
    read and checked from a local path or Cloud Storage.

    Raises:
        ConfigError: the file cannot be read, or is not a valid models file.
    """
    if config.catalog is not None:
        return config.catalog
    # A storage client of its own: this runs at import, in the gunicorn master, before the fork.
    return models_file.load(config.models_file, Storage.configured(config))


def _read_rest(request) -> None:
    """Reads what is left of the request's body, a piece at a time, until it ends or stops
    arriving (`http.body_deadline`); any other failure to read it is left to the next
    reader."""
    with contextlib.suppress(Exception):
        while request.stream.read(_REST_CHUNK):
            pass


def _log_request(request, status: int, seconds: float, note: dict) -> None:
    user_agent = request.environ.get("HTTP_USER_AGENT", "")
    logs.request(log, _entry, request.method, request.path, status, seconds, user_agent, note)


def _entry(
    method: str, path: str, status: int, seconds: float, user_agent: str, note: dict
) -> tuple[str, dict]:
    """A request's log entry: its message and fields (made later, see `logs.request`)."""
    method, path = echo(method), echo(path)
    return f"{method} {path} -> {status} in {seconds * 1000:.1f} ms", {
        "httpRequest": {
            "requestMethod": method,
            "requestUrl": path,
            "status": status,
            "latency": f"{seconds:.6f}s",
            "userAgent": echo(user_agent),
        },
        "status": status,
        "latencyMs": round(seconds * 1000, 3),
        **note,
    }


def _gate(config: Config):
    """The credential check `CPR_AUTH=google` asks for, or None under `iam`."""
    if config.auth != "google":
        return None
    from .auth import Gate
    from .tokens import Verifier

    verifier = Verifier(tokeninfo_url=config.auth_tokeninfo_url, certs_url=config.auth_certs_url)
    return Gate(config.allowed_principals, verifier, config.auth_audiences)


def _urls(request, service: str) -> tuple[str, ...]:
    """The URLs this function is called at, as an ID token for it names them: its own host
    (a Cloud Run URL is the service's alone), or on the host every function of a project
    and region shares (`REGION-PROJECT.cloudfunctions.net`), that host with the function's
    name (`K_SERVICE`). Never a path the client chose."""
    scheme = request.environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip()
    origin = f"{scheme or request.scheme}://{request.host}"
    if request.host.split(":")[0].endswith(".cloudfunctions.net"):
        return (f"{origin}/{service}",) if service else ()
    return (origin,)


def _google(path: str) -> bool:
    """Whether the path is one of Google's resource routes, whose clients expect Google's errors."""
    return "v1/projects/" in path


class _NotAllowed(MethodNotAllowed):
    def __init__(self, method: str, path: str, allowed: tuple[str, ...]):
        super().__init__(
            f"{echo(method)} is not allowed on {echo(path)}; use {' or '.join(allowed)}"
        )
        self.headers = {"Allow": ", ".join(allowed)}
