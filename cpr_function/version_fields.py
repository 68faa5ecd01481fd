"""Checking one version's fields, from a models file or the CPR_* settings, into its spec.

Every message names where the field came from (`models file m.yaml, model 'iris',
version 'v1', framework` or `CPR_FRAMEWORK`), what was received and what is taken.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .catalog import Catalog, ModelSpec, VersionSpec
from .errors import ConfigError
from .shims import FRAMEWORK_SPELLING

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
VERSION_FIELDS = {
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

Where = Callable[[str], str]


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


def checked_name(raw: Any, where: str) -> str:
    if isinstance(raw, bool):  # YAML 1.1 reads an unquoted yes, no, on, off as booleans
        raise ConfigError(
            f"the name in {where} was read as the YAML boolean {str(raw).lower()}: a name "
            "such as on, off, yes or no must be quoted ('off')"
        )
    return check_name(str(raw), f"the name in {where}")


def canonical(body: dict, spellings: dict[str, str], where: str) -> dict[str, Any]:
    no_unknown(body, tuple(spellings), where)
    fields: dict[str, Any] = {}
    for key, value in body.items():
        name = spellings[key]
        if name in fields:
            raise ConfigError(f"{where} sets {name} twice (as {key!r} and another spelling)")
        fields[name] = value
    return fields


def no_unknown(body: dict, known: tuple[str, ...], where: str) -> None:
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
        raise ConfigError(f"{where(field)} must be a string; got {kind_of(value)} {value!r}")
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


def kind_of(value) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)


def single(model: str, version: str, fields: Mapping[str, Any], where: Where) -> Catalog:
    """A catalog of one model with one version, from the single-model settings."""
    spec = version_spec(model, version, fields, where)
    return Catalog(models=(ModelSpec(model, (spec,), version),), default_model=model)
