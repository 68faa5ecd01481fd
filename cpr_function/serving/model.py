"""One model version, loaded once on first use and answering requests: the in-process handle."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..catalog import VersionSpec
from ..compat import legacy
from ..config import Config
from ..errors import CprError, PredictorError, PredictTimeout, Relayed, host_timeout
from ..loading.storage import Storage
from ..shims import Shims
from . import batching, deaths, gcpause
from .coldstart import ColdStart

log = logging.getLogger(__name__)


class LazyModel:
    """Loads a version on the first call to `get()`, once, however many threads ask.

    A failed load is not remembered: the next request tries again, so a model
    fixed in Cloud Storage, or a storage outage that ended, recovers by itself.
    """

    def __init__(
        self,
        spec: VersionSpec,
        config: Config,
        storage: Storage,
        *,
        claim: Callable[[VersionSpec, list[str]], None] | None = None,
    ):
        self.spec = spec
        self._config = config
        self._claim = claim
        self._storage = storage
        self._lock = threading.Lock()
        self._predictor: Any = None
        self._pool = None
        self._cold: ColdStart | None = None  # the last load, and what it measured
        self.last_error: str | None = None
        self.shims = Shims(spec.model, spec.name, spec.shims)

    @property
    def phases(self) -> dict[str, float]:
        """Seconds each phase of the last load took (`total` once it succeeded)."""
        return self._cold.phases if self._cold is not None else {}

    @property
    def fetch_stats(self) -> dict[str, int]:
        """What the last load found and fetched: objects, bytes, packages unpacked."""
        return self._cold.fetch_stats if self._cold is not None else {}

    @property
    def failed_phase(self) -> str | None:
        """The phase the last load failed in, if it failed."""
        return self._cold.failed_phase if self._cold is not None else None

    @property
    def loaded(self) -> bool:
        return self._predictor is not None

    def get(self):
        """The loaded predictor.

        Raises:
            LoadError: the model could not be loaded.
        """
        if self._predictor is not None:
            return self._predictor
        with self._lock:
            if self._predictor is None:
                try:
                    self._predictor = self._load_and_free()
                    self.last_error = None
                except CprError as exc:
                    self.last_error = str(exc)
                    raise
        return self._predictor

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> Any:
        """The response body for a decoded request body.

        Raises:
            LoadError: the model could not be loaded.
            BadRequest: the body does not fit the model.
            PredictorError: the predictor raised.
        """
        model = self.get()
        try:
            with self.shims.active():
                if self._config.predict_timeout is None:
                    return model.respond(payload, vertex=vertex)
                return self._within_deadline(model, payload, vertex)
        except CprError:
            raise
        except (Exception, SystemExit) as exc:
            raise _failure(exc) from exc

    def predict_groups(self, groups: list[list], kwargs: dict[str, Any]) -> list:
        """One predict call on several requests' instances, cut back into one part per request:
        what a version in a process of its own is asked when its requests are merged.

        Raises:
            LoadError: the model could not be loaded.
            BadRequest: the instances do not fit the model.
            PredictorError: the predictor raised, or the version does not merge requests.
        """
        model = self.get()
        if not isinstance(model, batching.Batched):
            raise PredictorError(f"model {self.spec.key} does not merge requests")
        try:
            with self.shims.active():
                return model.predict(groups, kwargs)
        except CprError:
            raise
        except (Exception, SystemExit) as exc:
            raise _failure(exc) from exc

    def _within_deadline(self, model, payload: dict[str, Any], vertex: bool) -> Any:
        """Runs the predictor on a thread of its own, giving up on it after the deadline.

        A thread cannot be stopped: a predictor past its deadline runs on in the
        background while the caller gets a 504. (A version in a process of its own
        is ended instead; see worker.py.)
        """
        import concurrent.futures

        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=64, thread_name_prefix="cpr-predict"
                    )
        # The copied context carries `shims.active()` to the pool's thread.
        context = contextvars.copy_context()
        future = self._pool.submit(context.run, model.respond, payload, vertex=vertex)
        seconds = self._config.predict_timeout
        try:
            return future.result(timeout=seconds)
        except concurrent.futures.TimeoutError:
            log.error("predictor ran past its %ss deadline; it goes on in the background", seconds)
            raise PredictTimeout(
                f"model {self.spec.model} version {self.spec.name}: the predictor ran past the "
                f"{seconds:g} s deadline (CPR_PREDICT_TIMEOUT)"
            ) from None

    def schemas(self) -> dict[str, Any] | None:
        """The JSON schemas of the version's request and response bodies, when it declares them.

        Raises:
            LoadError: the model could not be loaded.
        """
        describe = getattr(self.get(), "schemas", None)
        return describe() if describe is not None else None

    def unload(self) -> None:
        """Drops the loaded predictor; the next request loads it again."""
        with self._lock:
            self._predictor = None
        gcpause.unloaded()  # its cycles were frozen with the rest of the load

    def _load_and_free(self):
        """`_load`, then with CPR_DELETE_AFTER_LOAD what was downloaded for it removed.

        That is the model directory's files and the package archives; unpacked
        packages stay, since code may import from them at any time. Nothing is removed
        while another load holds the cache (`Storage.in_use`), so a load never loses
        a file between its download and its `from_path`. Loading again (after an
        unload, in a new worker) downloads them again.
        """
        spec, cache = self.spec, self._config.cache_dir
        # Marked while it runs: a process killed here (out of memory) is known to the next.
        with deaths.loading(cache, spec.key, spec.model, spec.name) as mark:
            self._cold = ColdStart(
                spec, self._config, self._storage, self.shims, self._claim, listed=mark.sized
            )
            if not self._config.delete_after_load:
                loaded = self._cold.run()
            else:
                with self._storage.in_use():
                    loaded = self._cold.run()
                self._storage.discard(self._cold.listings)
        return loaded

    def status(self) -> dict[str, Any]:
        """What `GET /` shows of this version."""
        status = {
            "loaded": self.loaded,
            "coldStartSeconds": dict(self.phases),
            "cache": dict(self.fetch_stats),
            "lastError": self.last_error,
            "compatibility": self.shims.listed(),
        }
        batcher = getattr(self._predictor, "batcher", None)
        if batcher is not None:
            status["microbatch"] = {**batcher.status(), "merging": self._predictor.merges}
        return status


def _failure(exc: BaseException) -> CprError:
    """The error to answer with when a predictor raised."""
    timeout = host_timeout(exc)
    if timeout is not None:
        return timeout
    status = _client_error_status(exc)
    if status is not None:
        # A Vertex AI predictor refusing its input, as it would on Vertex AI.
        return Relayed(f"the predictor refused the request: {exc.detail}", status)
    # SystemExit too: user code calling sys.exit() must not take the worker down.
    log.exception("predictor raised")
    return PredictorError(f"prediction failed: {legacy.describe(exc)}")


def _client_error_status(exc: BaseException) -> int | None:
    """The 4xx status of an HTTP exception a predictor raised (Vertex AI predictors raise
    FastAPI's `HTTPException(status_code=400, detail=...)` for bad input); None otherwise."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500 and hasattr(exc, "detail"):
        return status
    return None
