"""The models and versions a deployment serves: from a models file or single-model settings."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from .compat.shims import FRAMEWORK_SPELLING
from .errors import ConfigError, NotFound

FRAMEWORKS = ("scikit-learn", "xgboost", "tensorflow", "mlflow")
# The v1 API's Framework enum value that meant "not set": detected from the model directory.
_UNSPECIFIED = "framework-unspecified"
AUTH_MODES = ("auto", "access-token", "id-token", "none")
MICROBATCH_MODES = ("false", "true", "all")
# Words read as true and false, here and in the CPR_* settings.
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FORWARD = re.compile(
    r"projects/[^/\s]+/(?:models/[^/\s]+(?:/versions/[^/\s]+)?|locations/[^/\s]+/endpoints/[^/\s]+)"
)
_PACKAGE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".whl")

# Field spellings accepted in a models file: ours (snake_case) and AI Platform's v1 names.
_VERSION_FIELDS = {
    "origin": "origin",
    "deployment_uri": "origin",
    "deploymentUri": "origin",
    "package_uris": "package_uris",
    "packageUris": "package_uris",
    "prediction_class": "prediction_class",
    "predictionClass": "prediction_class",
    "framework": "framework",
    "forward_to": "forward_to",
    "forwardTo": "forward_to",
    "api_endpoint": "api_endpoint",
    "apiEndpoint": "api_endpoint",
    "batch_size": "batch_size",
    "batchSize": "batch_size",
    "concurrency": "concurrency",
    "timeout": "timeout",
    "retries": "retries",
    "auth": "auth",
    "description": "description",
    "microbatch": "microbatch",
    "microbatch_max_size": "microbatch_max_size",
    "microbatchMaxSize": "microbatch_max_size",
    "microbatch_wait_ms": "microbatch_wait_ms",
    "microbatchWaitMs": "microbatch_wait_ms",
}
_MICROBATCH_FIELDS = ("microbatch", "microbatch_max_size", "microbatch_wait_ms")
_MODEL_FIELDS = {
    "versions": "versions",
    "default_version": "default_version",
    "defaultVersion": "default_version",
    "description": "description",
}

Where = Callable[[str], str]


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
        raise NotFound(f"model {self.name!r} has no version {wanted!r}; its versions: {known}")


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
        raise NotFound(f"no model named {wanted!r}; the models served here: {known}")

    def versions(self) -> list[VersionSpec]:
        return [v for m in self.models for v in m.versions]


def single(model: str, version: str, fields: Mapping[str, Any], where: Where) -> Catalog:
    """A catalog of one model with one version, from the single-model settings."""
    spec = version_spec(model, version, fields, where)
    return Catalog(models=(ModelSpec(model, (spec,), version),), default_model=model)


def parse(text: str, source: str) -> Catalog:
    """Reads a models file (YAML or JSON; JSON is YAML too).

    Raises:
        ConfigError: the file is not valid, naming the model, version and field at fault.
    """
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"models file {source} is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict) or not data["models"]:
        raise ConfigError(
            f"models file {source} must be a mapping with a non-empty 'models' mapping of "
            f"model names to models; got {_kind(data)}"
            + (f" with keys {', '.join(map(str, data))}" if isinstance(data, dict) else "")
        )
    _no_unknown(data, ("models", "default_model", "defaultModel"), f"models file {source}")
    models = tuple(_model(source, name, body) for name, body in data["models"].items())
    default = data.get("default_model", data.get("defaultModel", models[0].name))
    if isinstance(default, bool):
        _checked_name(default, f"models file {source}, default_model")
    if default not in {m.name for m in models}:
        raise ConfigError(
            f"models file {source}: default_model {default!r} is not one of the models: "
            f"{', '.join(m.name for m in models)}"
        )
    return Catalog(models=models, default_model=default, source=source)


def _model(source: str, name, body) -> ModelSpec:
    where = f"models file {source}, model {name!r}"
    name = _checked_name(name, where)
    if not isinstance(body, dict) or not isinstance(body.get("versions"), dict):
        raise ConfigError(
            f"{where} must be a mapping with a 'versions' mapping of version names to "
            f"versions; got {_kind(body)}"
        )
    fields = _canonical(body, _MODEL_FIELDS, where)
    if not fields["versions"]:
        raise ConfigError(f"{where} has no versions; list at least one under 'versions'")
    versions = []
    for version, vbody in fields["versions"].items():
        vwhere = f"{where}, version {version!r}"
        version = _checked_name(version, vwhere)
        if not isinstance(vbody, dict):
            raise ConfigError(f"{vwhere} must be a mapping of fields; got {_kind(vbody)}")
        vfields = _canonical(vbody, _VERSION_FIELDS, vwhere)
        # Messages name each field as the file spells it (microbatchWaitMs, deploymentUri).
        spelled = {_VERSION_FIELDS[key]: key for key in vbody}
        versions.append(
            version_spec(
                name, version, vfields, lambda f, w=vwhere, s=spelled: f"{w}, {s.get(f, f)}"
            )
        )
    names = [v.name for v in versions]
    default = fields.get("default_version")
    if isinstance(default, bool):
        _checked_name(default, f"{where}, default_version")
    if default is None and len(versions) > 1:
        raise ConfigError(
            f"{where} has several versions ({', '.join(names)}); name the one that serves "
            "by default with default_version"
        )
    default = str(default) if default is not None else names[0]
    if default not in names:
        raise ConfigError(
            f"{where}: default_version {default!r} is not one of its versions: {', '.join(names)}"
        )
    description = str(fields.get("description") or "")
    return ModelSpec(name, tuple(versions), default, description)


def version_spec(model: str, version: str, fields: Mapping[str, Any], where: Where) -> VersionSpec:
    """Checks one version's fields.

    Args:
        model: the model's name.
        version: the version's name.
        fields: canonical field names (`origin`, `package_uris`, ...) to raw values.
        where: names a field in error messages (a `CPR_*` variable or a models file path).

    Raises:
        ConfigError: a field is missing, malformed, or contradicts another.
    """
    get = {k: v for k, v in fields.items() if v not in (None, "", [], ())}.get
    forward_to, origin = _text(get, "forward_to", where), _text(get, "origin", where)
    prediction_class = _text(get, "prediction_class", where)
    framework, spelling = _framework(_text(get, "framework", where), where)
    packages = _uris(get("package_uris"), where)
    auth = (_text(get, "auth", where) or "auto").lower()
    if auth not in AUTH_MODES:
        raise ConfigError(f"{where('auth')} must be one of {', '.join(AUTH_MODES)}; got {auth!r}")
    if forward_to is not None:
        if not _FORWARD.fullmatch(forward_to):
            raise ConfigError(
                f"{where('forward_to')} must be projects/P/models/M[/versions/V] or "
                f"projects/P/locations/L/endpoints/E; got {forward_to!r}"
            )
        local = [f for f in ("origin", "package_uris", "prediction_class", "framework") if get(f)]
        if local:
            raise ConfigError(
                f"{where('forward_to')} forwards to a deployed model, so "
                f"{', '.join(where(f) for f in local)} cannot be set too"
            )
        batching = [f for f in _MICROBATCH_FIELDS if get(f) is not None]
        if batching:
            raise ConfigError(
                f"{where('forward_to')} forwards to a deployed model, so "
                f"{', '.join(f'{f}={get(f)!r}' for f in batching)} cannot be set too: "
                "micro-batching merges requests for versions served here, and forwarding "
                "sends batches of batch_size already"
            )
        if "/endpoints/" not in forward_to and not get("api_endpoint"):
            raise ConfigError(
                f"{where('forward_to')} names an AI Platform v1 model, and ml.googleapis.com "
                f"was shut down: set {where('api_endpoint')} to the base URL of a server that "
                "speaks its contract (another cpr-function, for one)"
            )
    elif origin is None:
        raise ConfigError(
            f"{where('origin')} must name the model directory (gs://bucket/prefix, a local "
            f"directory or a file:// URI), or {where('forward_to')} a deployed model; it is unset"
        )
    if prediction_class is not None:
        parts = prediction_class.split(".")
        if len(parts) < 2 or not all(p.isidentifier() for p in parts):
            raise ConfigError(
                f"{where('prediction_class')} must be module.Class, like predictor.MyPredictor; "
                f"got {prediction_class!r}"
            )
        if framework is not None:
            raise ConfigError(
                f"set {where('prediction_class')} for custom code or {where('framework')} for a "
                f"framework model, not both; got {prediction_class!r} and {framework!r}"
            )
    return VersionSpec(
        model=model,
        name=version,
        origin=origin,
        package_uris=packages,
        prediction_class=prediction_class,
        framework=framework,
        forward_to=forward_to,
        api_endpoint=_endpoint(get("api_endpoint"), where),
        batch_size=_positive(get("batch_size"), where("batch_size"), 100),
        concurrency=_positive(get("concurrency"), where("concurrency"), 16),
        timeout=_seconds(get("timeout"), where("timeout"), 60.0),
        retries=_count(get("retries"), where("retries"), 5),
        auth=auth,
        description=str(get("description") or ""),
        **microbatch_fields(get, where),
        shims=spelling,
    )


def _framework(raw: str | None, where: Where) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """A framework as gcloud spells it, from any spelling AI Platform accepted.

    gcloud took `scikit-learn`; the v1 API's Framework enum, which `versions
    describe` prints and deploy scripts copied, is `SCIKIT_LEARN`; older scripts
    wrote `SCIKIT-LEARN`. Case is ignored, `_` reads as `-`, and the enum's
    `FRAMEWORK_UNSPECIFIED` means unset.

    Returns:
        The framework (None when unset) and the spelling shim noted, if any.

    Raises:
        ConfigError: not a framework this function serves.
    """
    if raw is None:
        return None, ()
    name = raw.lower().replace("_", "-")
    if name == _UNSPECIFIED:
        return None, ((FRAMEWORK_SPELLING, f"{raw!r} (the v1 API's unset value): detected"),)
    if name not in FRAMEWORKS:
        raise ConfigError(
            f"{where('framework')} must be one of {', '.join(FRAMEWORKS)}; got {raw!r} (any "
            "case is taken, and '_' for '-' as in the v1 API's SCIKIT_LEARN)"
        )
    noted = ((FRAMEWORK_SPELLING, f"{raw!r} read as {name}"),) if raw != name else ()
    return name, noted


def _microbatch_mode(raw: Any, name: str) -> str:
    """`false`, `true` or `all` from a setting (a YAML boolean counts).

    Raises:
        ConfigError: anything else, with what each mode means.
    """
    mode = str(raw).strip().lower()
    mode = "true" if mode in TRUE_WORDS else "false" if mode in FALSE_WORDS else mode
    if mode not in MICROBATCH_MODES:
        raise ConfigError(
            f"{name} must be true (merge concurrent requests for predictors that declare "
            "batchable = True), all (for every AI Platform predictor that does not declare "
            f"batchable = False) or false; got {raw!r}"
        )
    return mode


def _microbatch_max_size(raw: Any, name: str) -> int:
    """The most instances one merged call is given, from 1 to 100000.

    Raises:
        ConfigError: not a whole number in that range.
    """
    try:
        value = int(str(raw).strip()) if not isinstance(raw, bool | float) else 0
    except ValueError:
        value = 0
    if not 1 <= value <= 100_000:
        raise ConfigError(
            f"{name} must be a whole number of instances from 1 to 100000, the most one "
            f"merged predict call is given; got {raw!r}"
        )
    return value


def _microbatch_wait(raw: Any, name: str) -> float:
    """The longest a merged call waits for company, in seconds, from milliseconds (0 to 1000).

    Raises:
        ConfigError: not a number of milliseconds in that range.
    """
    try:
        value = float(str(raw).strip()) if not isinstance(raw, bool) else -1.0
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1000:
        raise ConfigError(
            f"{name} must be a number of milliseconds from 0 to 1000, the longest a merged "
            f"call waits for more requests to join; got {raw!r}"
        )
    return value / 1000


def microbatch_fields(get: Callable[[str], Any], where: Where) -> dict[str, Any]:
    """Micro-batching settings, checked: None for each one that is not set.

    Args:
        get: a field's raw value (`microbatch`, `microbatch_max_size`,
            `microbatch_wait_ms`), or None.
        where: names a field in error messages (a models file path or a `CPR_*` variable).

    Returns:
        `microbatch`, `microbatch_max_size` and `microbatch_wait` (seconds), as
        `VersionSpec` and `Config` name them.

    Raises:
        ConfigError: a value outside what its field accepts.
    """
    checks = {
        "microbatch": ("microbatch", _microbatch_mode),
        "microbatch_max_size": ("microbatch_max_size", _microbatch_max_size),
        "microbatch_wait": ("microbatch_wait_ms", _microbatch_wait),
    }
    return {
        setting: None if (raw := get(field)) is None else check(raw, where(field))
        for setting, (field, check) in checks.items()
    }


def check_name(raw: str, what: str) -> str:
    """A model or version name as it may appear in a route.

    Raises:
        ConfigError: the name has characters a route cannot carry.
    """
    if not _NAME.fullmatch(raw):
        raise ConfigError(
            f"{what} must be letters, digits, '_', '.' or '-', starting with a letter or "
            f"digit; got {raw!r}"
        )
    return raw


def _checked_name(raw: Any, where: str) -> str:
    if isinstance(raw, bool):  # YAML 1.1 reads an unquoted yes, no, on, off as booleans
        raise ConfigError(
            f"the name in {where} was read as the YAML boolean {str(raw).lower()}: a name "
            "such as on, off, yes or no must be quoted ('off')"
        )
    return check_name(str(raw), f"the name in {where}")


def _canonical(body: dict, spellings: dict[str, str], where: str) -> dict[str, Any]:
    _no_unknown(body, tuple(spellings), where)
    fields: dict[str, Any] = {}
    for key, value in body.items():
        name = spellings[key]
        if name in fields:
            raise ConfigError(f"{where} sets {name} twice (as {key!r} and another spelling)")
        fields[name] = value
    return fields


def _no_unknown(body: dict, known: tuple[str, ...], where: str) -> None:
    unknown = [str(k) for k in body if k not in known]
    if unknown:
        raise ConfigError(
            f"{where} has unknown field {', '.join(map(repr, unknown))}; "
            f"known fields: {', '.join(known)}"
        )


def _text(get, field: str, where: Where) -> str | None:
    value = get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where(field)} must be a string; got {_kind(value)} {value!r}")
    return value.strip() or None


def _uris(raw, where: Where) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list) or not all(isinstance(u, str) for u in raw):
        raise ConfigError(f"{where('package_uris')} must be a list of URIs; got {raw!r}")
    uris = tuple(u.strip() for u in raw if u.strip())
    for uri in uris:
        if not uri.endswith(_PACKAGE_SUFFIXES):
            raise ConfigError(
                f"{where('package_uris')} must list .tar.gz, .zip or .whl packages; got {uri!r}"
            )
    return uris


def _endpoint(raw, where: Where) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", raw.strip()):
        raise ConfigError(
            f"{where('api_endpoint')} must be an http:// or https:// base URL such as "
            f"https://us-central1-aiplatform.googleapis.com; got {raw!r}"
        )
    return raw.strip().rstrip("/")


def _positive(raw, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = 0
    if value <= 0 or isinstance(raw, bool):
        raise ConfigError(f"{name} must be a positive whole number; got {raw!r}")
    return value


def _seconds(raw, name: str, default: float) -> float:
    if raw is None:
        return default
    try:
        value = float(str(raw).strip().removesuffix("s"))
    except ValueError:
        value = 0.0
    if not value > 0 or isinstance(raw, bool):
        raise ConfigError(f"{name} must be a positive number of seconds, such as 30; got {raw!r}")
    return value


def _count(raw, name: str, default: int) -> int:
    if raw is None:
        return default
    if str(raw).strip() == "0":
        return 0
    return _positive(raw, name, default)


def _kind(value) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)
