"""The models and versions a deployment serves, as data: each version's spec, and lookup by name."""

from __future__ import annotations

import dataclasses

from .errors import NotFound, echo


@dataclasses.dataclass(frozen=True)
class VersionSpec:
    """One version: a model directory served in this process, or a forward target."""

    model: str
    name: str
    origin: str | None = None
    package_uris: tuple[str, ...] = ()
    prediction_class: str | None = None
    framework: str | None = None
    forward_to: str | None = None
    api_endpoint: str | None = None
    batch_size: int = 100
    concurrency: int = 16
    timeout: float = 60.0
    retries: int = 5
    auth: str = "auto"
    description: str = ""
    # Micro-batching for this version; None takes the deployment's CPR_MICROBATCH* setting.
    microbatch: str | None = None
    microbatch_max_size: int | None = None
    microbatch_wait: float | None = None
    is_example: bool = False
    # Compatibility shims the settings needed (kind, detail): see shims.py.
    shims: tuple[tuple[str, str], ...] = ()

    @property
    def in_process(self) -> bool:
        return self.forward_to is None

    @property
    def key(self) -> str:
        return f"{self.model}/{self.name}"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A named model: its versions, in the order given, and the one that serves by default."""

    name: str
    versions: tuple[VersionSpec, ...]
    default_version: str
    description: str = ""

    def version(self, name: str | None = None) -> VersionSpec:
        """The named version, or the default one.

        Raises:
            NotFound: the model has no such version.
        """
        wanted = name or self.default_version
        for version in self.versions:
            if version.name == wanted:
                return version
        known = ", ".join(v.name for v in self.versions)
        raise NotFound(
            f"model {self.name!r} has no version {echo(wanted)!r}; its versions: {known}"
        )


@dataclasses.dataclass(frozen=True)
class Catalog:
    """Every model a deployment serves; the default model answers `POST /`."""

    models: tuple[ModelSpec, ...]
    default_model: str
    source: str | None = None

    def model(self, name: str | None = None) -> ModelSpec:
        """The named model, or the default one.

        Raises:
            NotFound: no model has that name.
        """
        wanted = name or self.default_model
        for model in self.models:
            if model.name == wanted:
                return model
        known = ", ".join(m.name for m in self.models)
        raise NotFound(f"no model named {echo(wanted)!r}; the models served here: {known}")

    def versions(self) -> list[VersionSpec]:
        return [v for m in self.models for v in m.versions]
