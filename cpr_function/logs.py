"""Where the service's log lines go: JSON for Cloud Logging, or plain lines in a terminal.

JSON lines follow Cloud Logging's structured-logging conventions: `severity`,
`message`, `logging.googleapis.com/trace` (from the request's `X-Cloud-Trace-Context`),
plus the record's own fields (`model`, `version`, `phase`, `seconds`, ...).
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time

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
    handler = logging.StreamHandler(sys.stderr)
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(_Json() if json_lines else _Text())
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


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import orjson

        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        entry = {
            "severity": record.levelname,
            "message": message,
            "time": _iso(record.created),
            "logger": record.name,
            "pid": record.process,
        }
        entry.update(getattr(record, "cpr_fields", None) or {})
        entry.update(TRACE.get() or {})
        return orjson.dumps(entry, default=str).decode()


class _Text(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1e6):06d}Z"
