"""One model version, loaded once on first use: fetch, unpack, import, `from_path`."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import frameworks, logs
from ..catalog import VersionSpec
from ..compat import keras2, legacy
from ..compat.shims import Shims
from ..config import Config
from ..errors import CprError, LoadError, PredictorError, PredictTimeout, Relayed
from ..loading import packages
from ..loading.storage import ObjectChanged, Storage
from . import batching, gcpause, predictor

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
        self.phases: dict[str, float] = {}
        self.fetch_stats: dict[str, int] = {}
        self.last_error: str | None = None
        self.failed_phase: str | None = None
        self.shims = Shims(spec.model, spec.name, spec.shims)

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

    def _load_and_free(self):
        """`_load`, then with CPR_DELETE_AFTER_LOAD what was downloaded for it removed.

        That is the model directory's files and the package archives; unpacked
        packages stay, since code may import from them at any time. Nothing is removed
        while another load holds the cache (`Storage.in_use`), so a load never loses
        a file between its download and its `from_path`. Loading again (after an
        unload, in a new worker) downloads them again.
        """
        if not self._config.delete_after_load:
            return self._load()
        with self._storage.in_use():
            loaded = self._load()
        self._storage.discard(self._listings)
        return loaded

    def _load(self):
        config, spec = self._config, self.spec
        if spec.is_example:
            log.info("no model is configured: serving the bundled example model")
        log.info("loading model %s version %s", spec.model, spec.name)
        start = time.perf_counter()
        with self._phase("download"):
            try:
                origin, package_listings, fetched = self._download()
            except ObjectChanged as exc:
                # Replaced while this cold start fetched it: the new version, whole.
                log.warning("%s; listing model %s version %s again", exc, spec.model, spec.name)
                origin, package_listings, fetched = self._download()
            total = origin.size + sum(p.size for p in package_listings)
            self._listings = [origin, *package_listings]
            self.fetch_stats = {
                "objects": sum(f.objects for f in fetched),
                "downloaded": sum(f.downloaded for f in fetched),
                "downloadedBytes": sum(f.downloaded_bytes for f in fetched),
                "totalBytes": total,
            }
        model_dir = fetched[0].path
        with self._phase("unpack"):
            unpacked = [
                packages.unpack(
                    f.path, listing.uri, config.cache_dir, max_bytes=config.max_model_bytes
                )
                for f, listing in zip(fetched[1:], package_listings, strict=True)
            ]
            roots = [r for p in unpacked for r in p.roots]
            requirements = [r for p in unpacked for r in p.requirements]
            if config.install_dependencies and requirements:
                roots_after = [packages.install_requirements(requirements, config.cache_dir)]
            else:
                roots_after = []
            self.fetch_stats["unpacked"] = sum(p.unpacked for p in unpacked)
        # No cyclic garbage collection from here to the end of from_path (gcpause.py):
        # downloads and unpacking, which can take long, run with it.
        with gcpause.paused(), self.shims.active():
            with self._phase("import"):
                if config.legacy_compat:
                    legacy.install()
                    keras2.choose(model_dir, self.shims)
                provided = [m for p in unpacked for m in p.modules]
                if self._claim is not None:
                    self._claim(spec, provided)
                predictor.activate(roots, provided)
                if roots_after:
                    sys.path.extend(str(r) for r in roots_after)
                if spec.prediction_class:
                    cls = predictor.resolve(spec.prediction_class, provided)
            with self._phase("from_path"):
                if spec.prediction_class:
                    loaded = predictor.construct(cls, model_dir, self.shims)
                else:
                    loaded = frameworks.load(model_dir, spec.framework)
                loaded = batching.wrap(loaded, **config.microbatch_for(spec)._asdict())
        self.phases["total"] = round(time.perf_counter() - start, 6)
        log.info(
            "model %s version %s loaded in %.3fs: %s",
            spec.model,
            spec.name,
            self.phases["total"],
            self.phases,
        )
        return loaded

    def _download(self):
        """Lists the model directory and packages, checks their size, fetches them.

        Raises:
            ObjectChanged: an object was replaced between its listing and its download.
        """
        origin = self._storage.list_directory(self.spec.origin)
        package_listings = [self._storage.list_file(u) for u in self.spec.package_uris]
        total = origin.size + sum(p.size for p in package_listings)
        if total > self._config.max_model_bytes:
            raise LoadError(
                f"the model directory and packages total {total} bytes, more than the "
                f"{self._config.max_model_bytes} that CPR_MAX_MODEL_BYTES allows"
            )
        fetched = [self._storage.fetch(x) for x in [origin, *package_listings]]
        return origin, package_listings, fetched

    @contextlib.contextmanager
    def _phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.failed_phase = name
            raise
        finally:
            self.phases[name] = seconds = round(time.perf_counter() - start, 6)
            extra = {"phase": name, "seconds": seconds, "model": self.spec.model}
            extra["version"] = self.spec.name
            if name == "download":
                extra["bytes"] = self.fetch_stats.get("downloadedBytes", 0)
                extra["totalBytes"] = self.fetch_stats.get("totalBytes", 0)
            if name == "unpack":
                extra["packagesUnpacked"] = self.fetch_stats.get("unpacked", 0)
            log.info("cold start phase %s took %.3fs", name, seconds, extra=logs.fields(**extra))

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
