"""Where the service's log lines go: JSON for Cloud Logging, or plain lines in a terminal.

JSON lines follow Cloud Logging's structured-logging conventions: `severity`,
`message`, `logging.googleapis.com/trace` (from the request's `X-Cloud-Trace-Context`),
plus the record's own fields (`model`, `version`, `phase`, `seconds`, ...).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import sys
import time
from collections.abc import Callable

from .log_writer import QueuingHandler

FORMATS = ("auto", "json", "text")

# The trace of the request being answered, as Cloud Logging names it.
TRACE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("cpr_trace", default=None)


def configure(fmt: str = "auto", level: int = logging.INFO) -> None:
    """Sends this package's log records to stderr, once.

    Args:
        fmt: `json`, `text`, or `auto` (text when stderr is a terminal, JSON otherwise).
        level: the lowest level logged.
    """
    logger = logging.getLogger("cpr_function")
    if logger.handlers:
        return
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if json_lines:
        handler = QueuingHandler(sys.stderr)
        handler.setFormatter(_Json())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Text())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def fields(**values) -> dict:
    """Structured fields for a log call: `log.info("...", extra=fields(model=m))`."""
    return {"cpr_fields": values}


def trace_from(header: str | None) -> dict | None:
    """Cloud Logging's trace fields from an `X-Cloud-Trace-Context: TRACE/SPAN;o=1` header."""
    if not header:
        return None
    trace, _, rest = header.partition("/")
    if not trace.strip():
        return None
    project = next(
        (
            os.environ[k]
            for k in ("GOOGLE_CLOUD_PROJECT", "GCP_PROJECT", "GCLOUD_PROJECT")
            if os.environ.get(k)
        ),
        None,
    )
    found = {
        "logging.googleapis.com/trace": (
            f"projects/{project}/traces/{trace.strip()}" if project else trace.strip()
        )
    }
    span = rest.split(";")[0].strip()
    if span:
        found["logging.googleapis.com/spanId"] = span
    return found


def request(logger: logging.Logger, entry: Callable[..., tuple[str, dict]], *args) -> None:
    """Logs the one entry of an answered request at INFO: `entry(*args)` is its message and
    its fields.

    The same as `logger.info(message, extra=fields(**values))`, but when that would reach
    only the JSON handler `configure` installed, this thread only queues `entry`, its
    arguments, the time and the request's trace, and the handler's writer thread makes the
    line and writes it, with others (see `log_writer`). In bench/overhead.py a LogRecord
    and the trip through the handlers took about 60 us of worker CPU a request, a fifth of
    the function's own work on a small prediction; queueing takes about 1 us in a loop,
    against 11 to 17 us for the line made and written there.
    """
    handler = _direct_handler(logger)
    if handler is not None:
        try:
            handler.queue(_request_line, logger.name, time.time(), TRACE.get(), entry, args)
            return
        except Exception:
            pass  # no writer thread could start: the ordinary path below writes it now
    message, values = entry(*args)
    logger.info(message, extra=fields(**values))


def _request_line(
    name: str,
    created: float,
    trace: dict | None,
    entry: Callable[..., tuple[str, dict]],
    args: tuple,
) -> str:
    """The line of a queued request entry, made on the writer thread."""
    message, values = entry(*args)
    return _line("INFO", message, created, name, os.getpid(), values, trace)


def _direct_handler(logger: logging.Logger) -> QueuingHandler | None:
    """The JSON handler, when an INFO record of `logger` would go to it and nowhere else.

    Found as logging finds a record's handlers: up the parents until one does not
    propagate. More loggers stand on the way in a gunicorn server than this package's
    modules make: at start gunicorn makes a logger of every name logging only holds a
    place for (`glogging.loggers()`), `cpr_function.http` among them.
    """
    if logger.disabled or logger.filters or not logger.isEnabledFor(logging.INFO):
        return None
    handlers: list[logging.Handler] = []
    current = logger
    while current is not None:
        handlers += current.handlers
        current = current.parent if current.propagate else None
    if (
        len(handlers) == 1
        and isinstance(handlers[0], QueuingHandler)
        and isinstance(handlers[0].formatter, _Json)
        and not handlers[0].filters
        and handlers[0].level <= logging.INFO
    ):
        return handlers[0]
    return None


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        values = getattr(record, "cpr_fields", None) or {}
        return _line(
            record.levelname,
            message,
            record.created,
            record.name,
            record.process,
            values,
            TRACE.get(),
        )


def _line(
    severity: str,
    message: str,
    created: float,
    name: str,
    pid: int | None,
    values: dict,
    trace: dict | None,
) -> str:
    import orjson

    entry = {
        "severity": severity,
        "message": message,
        "time": _iso(created),
        "logger": name,
        "pid": pid,
        **values,
        **(trace or {}),
    }
    return orjson.dumps(entry, default=str).decode()


class _Text(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


def _iso(created: float) -> str:
    return f"{_utc_second(int(created))}.{int(created % 1 * 1e6):06d}Z"


@functools.lru_cache(maxsize=2)
def _utc_second(second: int) -> str:
    """A second in ISO 8601, formatted once: strftime took 5 to 10 us an entry when serving."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
