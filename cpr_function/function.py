"""The Cloud Functions entry point `predict`: this deployment's app, built once at import.

A function's `main.py` needs one line, `from cpr_function import predict`; functions-
framework may also take this file itself as `--source`, so its imports are absolute.
Importing it reads the configuration (and a models file) and nothing else: no model is
downloaded or loaded before the first request, so the gunicorn master that imports it
before forking workers stays light. With CPR_WARMUP, each worker starts loading right
after the fork.
"""

import os

import functions_framework
from werkzeug.exceptions import HTTPException

from cpr_function.config import Config
from cpr_function.http.app import App
from cpr_function.logs import configure

_config = Config.from_env(os.environ)
configure(_config.log_format)
_app = App(_config)
if _config.warmup != "none":
    os.register_at_fork(after_in_child=_app.warm_up)


def predict(request):
    """Answers a prediction, status or error for one HTTP request."""
    return _app(request)


@functions_framework.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    """What the host refuses before `predict` runs (a path it cannot route) answers JSON too."""
    return _app.refused(exc)
