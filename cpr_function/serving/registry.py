"""Which handle serves each version, loading lazily and unloading within the memory budget."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..catalog import Catalog, VersionSpec
from ..config import Config
from ..errors import LoadError
from ..loading.storage import Storage
from . import deaths
from .budget import MemoryBudget
from .model import LazyModel

log = logging.getLogger(__name__)


class Registry:
    """Every version of the catalog, each loaded on its first request.

    With process isolation each in-process version lives in a child process of
    its own, and the least recently used ones are ended while the loaded
    versions' memory exceeds the budget (`budget`). Without it, versions share
    this process and must not ship modules of the same name.
    """

    def __init__(self, catalog: Catalog, config: Config, storage: Storage):
        self.catalog = catalog
        self._config = config
        local = [v for v in catalog.versions() if v.in_process]
        if config.isolation == "auto":
            self.isolation = "process" if len(local) > 1 else "none"
        else:
            self.isolation = config.isolation
        self._lock = threading.Lock()
        self._claims: dict[str, str] = {}
        self._isolated: dict[str, str] = {}  # versions moved to a process of their own, and why
        self._handles = {v.key: self._handle(v, storage) for v in catalog.versions()}
        self._budget = MemoryBudget(config.memory_budget, self._handles)

    def _handle(self, spec: VersionSpec, storage: Storage):
        if not spec.in_process:
            from ..remote.forward import Forwarder

            return Forwarder(spec)
        if self.isolation == "process":
            from .process import ProcessModel

            return ProcessModel(spec, self._config)
        return LazyModel(spec, self._config, storage, claim=self._claim)

    def respond(self, spec: VersionSpec, payload: dict[str, Any], *, vertex: bool = False) -> Any:
        """A version's response body for a decoded request body, loading it first if needed.

        Raises:
            CprError: the version failed to load, the body does not fit it, or its
                predictor failed.
        """
        handle = self._serving(spec)
        body = handle.respond(payload, vertex=vertex)
        self._budget.used(spec.key)
        return body

    def schemas(self, spec: VersionSpec) -> dict[str, Any] | None:
        """The request and response schemas a version declares, loading it if needed.

        Raises:
            CprError: the version failed to load.
        """
        schemas = self._serving(spec).schemas()
        self._budget.used(spec.key)
        return schemas

    def load(self, spec: VersionSpec) -> None:
        """Loads a version ahead of its first request (warm-up).

        Raises:
            CprError: the version failed to load.
        """
        handle = self._serving(spec)
        if hasattr(handle, "get"):
            handle.get()
            self._budget.used(spec.key)

    def _serving(self, spec: VersionSpec):
        """The version's handle; a version whose in-process load was killed (out of memory,
        most likely) is loaded in a process of its own from then on, so that it cannot take
        this worker, and the requests to other versions in it, down again."""
        handle = self._handles[spec.key]
        if not isinstance(handle, LazyModel) or handle.loaded:
            return handle
        death = deaths.killed(self._config.cache_dir, spec.key)
        if death is None:
            return handle
        from .process import ProcessModel

        with self._lock:
            if self._handles[spec.key] is handle:
                log.warning(
                    "model %s version %s: %s; it is loaded in a process of its own from now on",
                    spec.model,
                    spec.name,
                    death.describe(),
                )
                moved = ProcessModel(spec, self._config)
                # FAILED, and why, until it loads in its process.
                moved.last_error = (
                    f"model {spec.model} version {spec.name}: {death.describe()}; it is loaded "
                    "in a process of its own from the next request on"
                )
                self._handles[spec.key] = moved
                self._isolated[spec.key] = death.describe()
            return self._handles[spec.key]

    def state(self, spec: VersionSpec) -> tuple[str, str | None]:
        """The version's v1 state: READY unless its last load failed (or was killed)."""
        error = getattr(self._serving(spec), "last_error", None)
        return ("FAILED", error) if error else ("READY", None)

    def _claim(self, spec: VersionSpec, modules: list[str]) -> None:
        with self._lock:
            clash = {m: o for m in modules if (o := self._claims.get(m, spec.key)) != spec.key}
            if clash:
                module, other = next(iter(clash.items()))
                raise LoadError(
                    f"model {spec.model} version {spec.name} ships the module {module!r}, and "
                    f"{other.replace('/', ' version ')}, already loaded in this process, ships "
                    "one of the same name; with CPR_ISOLATION=none versions cannot share module "
                    "names: use CPR_ISOLATION=process or auto"
                )
            self._claims.update(dict.fromkeys(modules, spec.key))

    def status(self) -> dict[str, Any]:
        """What `GET /` shows of the models and their versions."""
        models = []
        for model in self.catalog.models:
            versions = []
            for spec in model.versions:
                handle = self._serving(spec)
                described = {**_describe(spec, self._config), **handle.status()}
                if spec.key in self._isolated:
                    described["ownProcessBecause"] = self._isolated[spec.key]
                versions.append(described)
            models.append(
                {"name": model.name, "defaultVersion": model.default_version, "versions": versions}
            )
        return {
            "defaultModel": self.catalog.default_model,
            "isolation": self.isolation,
            "loadedMemoryBytes": self._budget.loaded_bytes(),
            "models": models,
        }


def _describe(spec: VersionSpec, config: Config) -> dict[str, Any]:
    if spec.forward_to:
        return {"name": spec.name, "forwardTo": spec.forward_to}
    batching = config.microbatch_for(spec)
    return {
        "name": spec.name,
        "origin": spec.origin,
        "packageUris": list(spec.package_uris),
        "predictionClass": spec.prediction_class,
        "framework": spec.framework,
        "microbatchMode": batching.mode,
        "microbatchMaxSize": batching.max_size,
        "microbatchWaitMs": round(batching.wait * 1000, 3),
    }
