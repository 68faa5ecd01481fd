"""The child process of a version served apart: load it, then answer the parent's messages.

Run as `python -m cpr_function.serving.worker FD` by `child`, with FD one end of a
socket pair. Every message starts with a call id, which its reply starts with too. The
first names the version and the settings; the reply is `("loaded", phases, fetch counts,
merges, ...)` or `("error", message, status, ...)`; then each `("respond", body, vertex)`,
`("predict", groups, kwargs)` or `("schemas",)` is answered `("ok", result, ...)` or
`("error", ...)`, several at once, each on a thread of its own. Every reply ends with the
version's shims when they changed, and the peak resident memory.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import resource
import sys
import threading
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

    load_id, _, spec, config = conn.recv()
    # The parent keeps the deadline: it ends this process when a prediction runs past it.
    config = dataclasses.replace(config, predict_timeout=None)
    configure(config.log_format)
    model = LazyModel(spec, config, Storage.configured(config))
    shown = _Shown(model)
    try:
        model.get()
    except Exception as exc:
        conn.send((load_id, *_error(exc), *shown.tail()))
        return 1
    loaded = model.get()
    batchable = isinstance(loaded, Batched)
    conn.send((load_id, "loaded", model.phases, model.fetch_stats, batchable, *shown.tail()))
    sending = threading.Lock()

    def answer(call_id: int, kind: str, args: list) -> None:
        try:
            if kind == "schemas":
                result = model.schemas()
            elif kind == "predict":
                parts = model.predict_groups(*args)
                result = ([protocol.encode(part) for part in parts], loaded.merges)
            else:
                result = _encoded(model.respond(args[0], vertex=args[1]))
            reply = ("ok", result)
        except BaseException as exc:  # SystemExit too: every call gets its answer
            reply = _error(exc)
        try:
            with sending:
                conn.send((call_id, *reply, *shown.tail()))
        except BaseException:
            log.exception("a reply could not be sent to the function; ending this process")
            os._exit(1)  # the function then sees it end, rather than wait for an answer

    # As many calls at once as the parent's worker has threads: as in-process, the
    # predictor is called from several threads at once.
    threads = int(os.environ.get("THREADS", "") or 0) or 8
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="cpr-call") as pool:
        while True:
            try:
                call_id, kind, *args = conn.recv()
            except (EOFError, OSError):
                return 0  # the parent went away
            pool.submit(answer, call_id, kind, args)


class _Shown:
    """What each reply to the parent ends with: the version's shims when they changed since
    the last reply (else None), and the peak resident memory."""

    def __init__(self, model):
        self._model = model
        self._sent = 0
        self._lock = threading.Lock()

    def tail(self) -> tuple[list | None, int]:
        with self._lock:
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


def _error(exc: BaseException) -> tuple:
    if isinstance(exc, CprError):
        return ("error", str(exc), exc.status_code)
    log.error("unexpected error in the worker process", exc_info=exc)
    return ("error", "internal error; the details are in the function's log", 500)


def main(argv: list[str]) -> int:
    from multiprocessing.connection import Connection

    return serve(Connection(int(argv[1])))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
