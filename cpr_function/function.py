"""The Cloud Functions entry point `predict`: this deployment's app, built once at import.

A function's `main.py` needs one line, `from cpr_function import predict`; functions-
framework may also take this file itself as `--source`, so its imports are absolute.
Importing it reads the configuration (and a models file) and nothing else: no model is
downloaded or loaded before the first request, so the gunicorn master that imports it
before forking workers stays light (once it listens, it imports the framework libraries
the workers will share, see `serving.shared_imports`). With CPR_WARMUP, or more than one
worker, each worker starts loading right after the fork. It also fills in
functions-framework's `WORKERS` and `THREADS` where unset (see `http.workers`), and
bounds what a client may send before a request reaches the app (see `http.server`),
before the server is built.
"""

import os

import functions_framework
from werkzeug.exceptions import HTTPException

from cpr_function.config import Config
from cpr_function.http import server, workers
from cpr_function.http.app import App
from cpr_function.logs import configure
from cpr_function.serving import shared_imports

workers.fill_defaults(os.environ, workers.usable_cpus())
server.install()
_config = Config.from_env(os.environ)
configure(_config.log_format)
_app = App(_config)
shared_imports.choose(_app.catalog.versions())
# With several worker processes, each loads its own copy of the model: warm every one,
# or a request that reaches a second worker waits for a cold load of its own.
if _config.warmup in ("default", "all") or (
    _config.warmup == "auto" and workers.count(os.environ) > 1
):
    os.register_at_fork(after_in_child=_app.warm_up)


def predict(request):
    """Answers a prediction, status or error for one HTTP request."""
    return _app(request)


@functions_framework.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    """What the host refuses before `predict` runs (a path it cannot route) answers JSON too."""
    return _app.refused(exc)
