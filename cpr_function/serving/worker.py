"""A model version in a process of its own: the parent's handle, and the child's loop.

Two versions whose packages ship modules of the same name (most ship a
`predictor.py`) cannot share one `sys.modules`, nor can their pickles. Each
then runs in a child Python process started with `python -m cpr_function.serving.worker`,
which loads the version with the same code as in-process serving and answers
predictions sent over a socket pair. The child encodes predictions to JSON
itself, so what crosses back is bytes, whatever the predictor returned.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ..catalog import VersionSpec
from ..config import Config
from ..errors import CprError, PredictTimeout, Relayed

log = logging.getLogger(__name__)

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class ProcessModel:
    """Runs one version in a child process, started on first use and restarted after a crash.

    One request at a time crosses the channel, so concurrent requests for the
    same version queue here; versions in different children run in parallel.
    """

    def __init__(self, spec: VersionSpec, config: Config):
        self.spec = spec
        self._config = config
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self.phases: dict[str, float] = {}
        self.fetch_stats: dict[str, int] = {}
        self.last_error: str | None = None
        self.memory: int | None = None
        self._batcher = None  # when the version merges requests, made at its first load
        self._merges = True  # false for good once its predictor answered another count
        self.shims: list[dict[str, str]] = []  # the compatibility shims the child noted

    @property
    def loaded(self) -> bool:
        return self._conn is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._conn is not None else None

    def get(self) -> None:
        """Starts the child and loads the version in it, unless that is done.

        Raises:
            CprError: the version failed to load, with the status the child gave.
        """
        with self._lock:
            self._ensure_loaded()

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> Any:
        """The response body, its values already encoded to JSON by the child.

        Raises:
            CprError: loading or predicting failed, with the status the child gave.
        """
        import orjson

        if self._batcher is not None and self._merges:
            from .. import protocol

            # Merged here, before the channel that takes one call at a time.
            instances, kwargs = protocol.instances_of(payload, vertex=vertex)
            return {"predictions": orjson.Fragment(self._batcher.predict(instances, kwargs))}
        deadline = self._config.predict_timeout
        encoded = self._ask(("respond", payload, vertex), "predicting", deadline)
        if isinstance(encoded, dict):
            return {key: orjson.Fragment(value) for key, value in encoded.items()}
        return orjson.Fragment(encoded)

    def _predict_groups(self, groups: list[list], kwargs: dict[str, Any]) -> list[bytes]:
        """One call in the child on several requests' instances: each request's predictions,
        encoded to JSON there (the child predicts each alone when the merged call's count
        was not theirs, and from then on no request is merged)."""
        deadline = self._config.predict_timeout
        parts, merges = self._ask(("predict", groups, kwargs), "predicting", deadline)
        if not merges and self._merges:
            self._merges = False
            log.warning(
                "model %s version %s does not answer one prediction per instance: its "
                "requests are no longer merged",
                self.spec.model,
                self.spec.name,
            )
        return parts

    def schemas(self) -> dict[str, Any] | None:
        """The request and response schemas the version declares, if any.

        Raises:
            CprError: loading failed, with the status the child gave.
        """
        return self._ask(("schemas",), "describing the model")

    def _ask(self, message: tuple, doing: str, deadline: float | None = None) -> Any:
        with self._lock:
            self._ensure_loaded()
            reply = self._call(message, doing, deadline)
            self._heard(reply)
            if reply[0] == "error":
                raise Relayed(reply[1], reply[2])
            return reply[1]

    def unload(self) -> None:
        """Ends the child; the next request starts a new one."""
        with self._lock:
            self._stop()

    def _heard(self, reply: tuple) -> None:
        """Takes what every reply ends with: the shims noted since, and peak memory."""
        if reply[-2] is not None:
            self.shims = reply[-2]
        self.memory = reply[-1]

    def status(self) -> dict[str, Any]:
        batcher = self._batcher
        return {
            "loaded": self.loaded,
            "pid": self.pid,
            "memoryBytes": self.memory if self.loaded else None,
            "coldStartSeconds": dict(self.phases),
            "cache": dict(self.fetch_stats),
            "lastError": self.last_error,
            "compatibility": list(self.shims),
            **({"microbatch": {**batcher.status(), "merging": self._merges}} if batcher else {}),
        }

    def _ensure_loaded(self) -> None:
        if self._conn is not None:
            return
        self._start()
        try:
            reply = self._call(("load", self.spec, self._config), "loading")
        except CprError as exc:
            self.last_error = str(exc)
            raise
        self._heard(reply)
        if reply[0] == "error":
            self._stop()
            self.last_error = reply[1]
            raise Relayed(reply[1], reply[2])
        _, self.phases, self.fetch_stats, batchable, *_ = reply
        self.last_error = None
        if batchable and self._batcher is None:
            from .batching import Batcher

            settings = self._config.microbatch_for(self.spec)
            self._batcher = Batcher(
                self._predict_groups, max_size=settings.max_size, wait=settings.wait
            )

    def _start(self) -> None:
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p
        )
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "cpr_function.serving.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        log.info(
            "model %s version %s: worker process %d started",
            self.spec.model,
            self.spec.name,
            self._proc.pid,
        )

    def _call(self, message: tuple, doing: str, deadline: float | None = None) -> tuple:
        try:
            self._conn.send(message)
            if deadline is not None and not self._conn.poll(deadline):
                self._proc.kill()
                self._stop()
                raise PredictTimeout(
                    f"model {self.spec.model} version {self.spec.name}: the predictor ran past "
                    f"the {deadline:g} s deadline (CPR_PREDICT_TIMEOUT); its process was ended "
                    "and the next request starts it again"
                )
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._stop()
            raise Relayed(
                f"model {self.spec.model} version {self.spec.name}: its worker process ended "
                f"({_exit(code)}) while {doing}; the next request starts it again",
                500,
            ) from exc

    def _stop(self) -> int | None:
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def _exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


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
