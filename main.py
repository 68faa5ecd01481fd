"""Cloud Functions entry point: `functions-framework --target predict`.

Importing this file reads the configuration and nothing else: no download and
no model load happen before the first request, so the gunicorn master that
imports it before forking workers stays light.
"""

import os

from cpr_function.app import App
from cpr_function.config import Config
from cpr_function.logs import configure

configure()
_app = App(Config.from_env(os.environ))


def predict(request):
    """Answers a prediction, status or error for one HTTP request."""
    return _app(request)
