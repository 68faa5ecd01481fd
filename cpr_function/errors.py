"""The errors this service answers with, each carrying its HTTP status."""

from __future__ import annotations

import os
import sys
from typing import ClassVar

ECHOED = 200  # characters of anything a client sent that a message or log line repeats


def echo(text: str) -> str:
    """At most `ECHOED` characters of something a client sent (a path, a name), so that an
    answer or a log line never grows with what the client chose to send."""
    return text if len(text) <= ECHOED else f"{text[:ECHOED]}... ({len(text)} characters)"


class CprError(Exception):
    """Base of every error that becomes an HTTP response.

    The message is shown to the caller as it is, so it must say what was
    expected and what was received, and never carry a stack trace or a secret.
    """

    status_code: ClassVar[int] = 500
    headers: ClassVar[dict[str, str]] = {}  # sent with the error's response


class ConfigError(CprError):
    """A `CPR_*` setting or a models file is wrong."""


class BadRequest(CprError):
    """The request body or its instances are not what the model accepts."""

    status_code = 400


class NotFound(CprError):
    """No such route, model or version."""

    status_code = 404


class Unauthenticated(CprError):
    """No Google credential, or one that does not verify (`CPR_AUTH=google`)."""

    status_code = 401
    headers = {"WWW-Authenticate": 'Bearer realm="cpr-function"'}


class PermissionDenied(CprError):
    """A verified caller who is not on `CPR_ALLOWED_PRINCIPALS`."""

    status_code = 403


class AuthUnavailable(CprError):
    """Google's token endpoints could not answer: nobody is admitted meanwhile."""

    status_code = 503


class MethodNotAllowed(CprError):
    """The route exists, but not for this HTTP method."""

    status_code = 405


class TooLarge(CprError):
    """The request body is larger than `CPR_MAX_REQUEST_BYTES`."""

    status_code = 413


class LoadError(CprError):
    """The model could not be fetched, unpacked, imported or loaded."""


class DiskFull(LoadError):
    """The cache has no room for the model: it does not fit the instance."""

    status_code = 507


class PredictorError(CprError):
    """The predictor raised, or its output cannot be encoded."""


class PredictTimeout(CprError):
    """The predictor ran past `CPR_PREDICT_TIMEOUT`."""

    status_code = 504


class BodyTimeout(CprError):
    """A request's body stopped arriving before it was whole (`http.body_deadline`)."""

    status_code = 408


class RequestTimeout(CprError):
    """functions-framework's own deadline on the whole request passed."""

    status_code = 504


def host_timeout(exc: BaseException) -> RequestTimeout | None:
    """The answer when `exc` is what functions-framework raises in a request's thread at its
    deadline (`THREADED_TIMEOUT_ENABLED=true` with `CLOUD_RUN_TIMEOUT_SECONDS`), mostly
    inside a slow predictor; None for any other exception."""
    # Not imported here: where functions-framework is not loaded (a batch job), it raised nothing.
    raised = sys.modules.get("functions_framework.exceptions")
    if raised is None or not isinstance(exc, raised.RequestTimeoutException):
        return None
    seconds = os.environ.get("CLOUD_RUN_TIMEOUT_SECONDS", "")
    return RequestTimeout(
        f"the request ran past functions-framework's {seconds} s deadline "
        "(CLOUD_RUN_TIMEOUT_SECONDS, with THREADED_TIMEOUT_ENABLED=true)"
    )


class UpstreamError(CprError):
    """The model forwarded to failed or answered what cannot be used."""

    status_code = 502


class UpstreamUnavailable(CprError):
    """The model forwarded to could not be reached, or kept answering 429 or 503."""

    status_code = 503


class UpstreamTimeout(CprError):
    """The model forwarded to did not answer in time."""

    status_code = 504


class Relayed(CprError):
    """An error raised in a model's worker process, carried over with its status."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code  # type: ignore[misc]
