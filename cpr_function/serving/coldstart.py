"""A version's cold start: download, unpack, import, `from_path`, each phase timed and logged."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable

from .. import frameworks, logs
from ..catalog import VersionSpec
from ..compat import keras2, legacy
from ..config import Config
from ..errors import LoadError
from ..loading import packages
from ..loading.gcs import ObjectChanged
from ..loading.storage import Listing, Storage
from ..shims import Shims
from . import batching, gcpause, routine, warning_filters

log = logging.getLogger(__name__)


class ColdStart:
    """One load of a version, and what it measured: the seconds of each phase, the objects
    and bytes fetched, and the phase that failed."""

    def __init__(
        self,
        spec: VersionSpec,
        config: Config,
        storage: Storage,
        shims: Shims,
        claim: Callable[[VersionSpec, list[str]], None] | None = None,
        listed: Callable[[int], None] | None = None,
    ):
        self.spec = spec
        self._listed = listed  # told the bytes of the model and packages once they are listed
        self._config = config
        self._storage = storage
        self._shims = shims
        self._claim = claim
        self.phases: dict[str, float] = {}
        self.fetch_stats: dict[str, int] = {}
        self.failed_phase: str | None = None
        self.listings: list[Listing] = []  # what was downloaded, to remove after the load

    def run(self):
        """Loads the version: download, unpack, import, `from_path`, each phase timed.

        Raises:
            CprError: a phase failed; `failed_phase` names it.
        """
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
            if self._listed is not None:
                self._listed(total)
            self.listings = [origin, *package_listings]
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
        with gcpause.paused(), self._shims.active():
            with self._phase("import"):
                if config.legacy_compat:
                    legacy.install()
                    keras2.choose(model_dir, self._shims)
                provided = [m for p in unpacked for m in p.modules]
                if self._claim is not None:
                    self._claim(spec, provided)
                routine.activate(roots, provided)
                if roots_after:
                    sys.path.extend(str(r) for r in roots_after)
                if spec.prediction_class:
                    cls = routine.resolve(spec.prediction_class, provided)
            with self._phase("from_path"):
                if spec.prediction_class:
                    loaded = routine.construct(cls, model_dir, self._shims)
                else:
                    loaded = frameworks.load(model_dir, spec.framework)
                loaded = batching.wrap(loaded, **config.microbatch_for(spec)._asdict())
            # The load's imports add filters; scikit-learn pays for each at every predict.
            warning_filters.compact()
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
