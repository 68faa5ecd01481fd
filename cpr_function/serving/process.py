"""A model version in a process of its own, as the parent sees it: load, ask, restart.

Two versions whose packages ship modules of the same name (most ship a `predictor.py`)
cannot share one `sys.modules`, nor can their pickles. Each then runs in a child
process (`child`, running `worker`), which loads the version with the same code as
in-process serving and answers predictions sent over a socket pair. The child encodes
predictions to JSON itself, so what crosses back is bytes, whatever the predictor
returned.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..catalog import VersionSpec
from ..config import Config
from ..errors import CprError, Relayed
from . import deaths
from .child import Child, Ended

log = logging.getLogger(__name__)

_UNLOAD_WAIT = 10.0  # seconds an unload waits for the calls under way to be answered


class ProcessModel:
    """Runs one version in a child process, started on first use and restarted after a crash.

    Concurrent requests for the version are answered concurrently by the child, as
    they are in-process (so that none waits in line behind another, at a shutdown
    too); a predictor that merges requests gets them merged here first.
    """

    def __init__(self, spec: VersionSpec, config: Config):
        self.spec = spec
        self._config = config
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # told when a call ends
        self._calls = 0  # calls under way in the child
        self._child = Child(f"model {spec.model} version {spec.name}")
        self.phases: dict[str, float] = {}
        self.fetch_stats: dict[str, int] = {}
        self.last_error: str | None = None
        self.memory: int | None = None
        self._batcher = None  # when the version merges requests, made at its first load
        self._merges = True  # false for good once its predictor answered another count
        self.shims: list[dict[str, str]] = []  # the compatibility shims the child noted

    @property
    def loaded(self) -> bool:
        return self._child.running

    @property
    def pid(self) -> int | None:
        return self._child.pid

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
            self._calls += 1
        try:
            reply = self._child.call(message, doing, deadline)
        finally:
            with self._lock:
                self._calls -= 1
                self._idle.notify_all()
        self._heard(reply)
        if reply[0] == "error":
            raise Relayed(reply[1], reply[2])
        return reply[1]

    def unload(self) -> None:
        """Ends the child once the calls under way are answered (or 10 s have passed: those
        still running then fail); the next request starts a new one."""
        with self._lock:
            # Requests keep coming to a busy version: wait a while, not for ever.
            self._idle.wait_for(lambda: self._calls == 0, timeout=_UNLOAD_WAIT)
            self._child.stop()

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
        if self._child.running:
            return
        self._child.start()
        try:
            reply = self._child.call(("load", self.spec, self._config), "loading")
        except CprError as exc:
            death = deaths.killed(self._config.cache_dir, self.spec.key)
            if isinstance(exc, Ended) and death is not None and death.bytes:
                sized = f"{exc} (its model and packages are {deaths.shown(death.bytes)})"
                exc = Relayed(sized, 500)
            self.last_error = str(exc)
            raise exc from None
        self._heard(reply)
        if reply[0] == "error":
            self._child.stop()
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
