"""The child process of a version served apart: load it, then answer the parent's messages.

Run as `python -m cpr_function.serving.worker FD` by `child`, with FD one end of a
socket pair. The first message names the version and the settings; the reply is
`("loaded", phases, fetch counts, merges, ...)` or `("error", message, status, ...)`;
then each `("respond", body, vertex)`, `("predict", groups, kwargs)` or `("schemas",)` is
answered `("ok", result, ...)` or `("error", ...)`. Every reply ends with the version's
shims when they changed, and the peak resident memory.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import sys
from typing import Any

from ..errors import CprError

log = logging.getLogger(__name__)


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def serve(conn) -> int:
    """The child's side: load the version named by the first message, then answer predictions."""
    from .. import protocol
    from ..loading.storage import Storage
    from ..logs import configure
    from .batching import Batched
    from .model import LazyModel

    _, spec, config = conn.recv()
    # The parent keeps the deadline: it ends this process when a prediction runs past it.
    config = dataclasses.replace(config, predict_timeout=None)
    configure(config.log_format)
    model = LazyModel(spec, config, Storage.configured(config))
    shown = _Shown(model)
    try:
        model.get()
    except Exception as exc:
        conn.send((*_error(exc), *shown.tail()))
        return 1
    loaded = model.get()
    batchable = isinstance(loaded, Batched)
    conn.send(("loaded", model.phases, model.fetch_stats, batchable, *shown.tail()))
    while True:
        try:
            kind, *args = conn.recv()
        except (EOFError, OSError):
            return 0  # the parent went away
        try:
            if kind == "schemas":
                result = model.schemas()
            elif kind == "predict":
                parts = model.predict_groups(*args)
                result = ([protocol.encode(part) for part in parts], loaded.merges)
            else:
                result = _encoded(model.respond(args[0], vertex=args[1]))
            reply = ("ok", result)
        except Exception as exc:
            reply = _error(exc)
        conn.send((*reply, *shown.tail()))


class _Shown:
    """What each reply to the parent ends with: the version's shims when they changed since
    the last reply (else None), and the peak resident memory."""

    def __init__(self, model):
        self._model = model
        self._sent = 0

    def tail(self) -> tuple[list | None, int]:
        listed = self._model.shims.listed()
        changed = len(listed) != self._sent
        self._sent = len(listed)
        return (listed if changed else None), _peak_rss()


def _encoded(body: Any) -> Any:
    """The body encoded here, in the child: each top-level value of an object on its own,
    so that the parent can add fields to it."""
    from .. import protocol

    if isinstance(body, dict):
        return {key: protocol.encode(value) for key, value in body.items()}
    return protocol.encode(body)


def _error(exc: Exception) -> tuple:
    if isinstance(exc, CprError):
        return ("error", str(exc), exc.status_code)
    log.error("unexpected error in the worker process", exc_info=exc)
    return ("error", "internal error; the details are in the function's log", 500)


def main(argv: list[str]) -> int:
    from multiprocessing.connection import Connection

    return serve(Connection(int(argv[1])))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
