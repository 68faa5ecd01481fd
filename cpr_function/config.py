"""The deployment's settings: every `CPR_*` variable, parsed and checked once."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from . import catalog, setting_values, version_fields
from .catalog import Catalog
from .errors import ConfigError

# The bundled example: inside the installed package, or beside it in this repository.
_HERE = Path(__file__).resolve().parent
EXAMPLE_DIR = next(
    (d for d in (_HERE / "example", _HERE.parent / "examples") if d.is_dir()), _HERE / "example"
)

ISOLATIONS = ("auto", "process", "none")


# The single-model settings, by the version field each one sets.
SINGLE_MODEL = {
    "origin": "CPR_ORIGIN",
    "package_uris": "CPR_PACKAGE_URIS",
    "prediction_class": "CPR_PREDICTION_CLASS",
    "framework": "CPR_FRAMEWORK",
    "forward_to": "CPR_FORWARD_TO",
    "api_endpoint": "CPR_API_ENDPOINT",
    "batch_size": "CPR_BATCH_SIZE",
    "concurrency": "CPR_FORWARD_CONCURRENCY",
    "timeout": "CPR_FORWARD_TIMEOUT",
    "retries": "CPR_FORWARD_RETRIES",
    "auth": "CPR_FORWARD_AUTH",
    "description": "CPR_DESCRIPTION",
}

KNOWN = (
    *SINGLE_MODEL.values(),
    "CPR_MODELS",
    "CPR_MODEL_NAME",
    "CPR_VERSION_NAME",
    "CPR_CACHE_DIR",
    "CPR_MAX_MODEL_BYTES",
    "CPR_MAX_REQUEST_BYTES",
    "CPR_INSTALL_DEPENDENCIES",
    "CPR_DELETE_AFTER_LOAD",
    "CPR_LEGACY_COMPAT",
    "CPR_ISOLATION",
    "CPR_MEMORY_BUDGET",
    "CPR_LOG_FORMAT",
    "CPR_REQUEST_LOG",
    "CPR_WARMUP",
    "CPR_PREDICT_TIMEOUT",
    "CPR_STORAGE_RETRY_SECONDS",
    "CPR_MICROBATCH",
    "CPR_MICROBATCH_MAX_SIZE",
    "CPR_MICROBATCH_WAIT_MS",
    "CPR_AUTH",
    "CPR_ALLOWED_PRINCIPALS",
    "CPR_AUTH_AUDIENCES",
    "CPR_AUTH_TOKENINFO_URL",
    "CPR_AUTH_CERTS_URL",
)
LOG_FORMATS = ("auto", "json", "text")
# CPR_REQUEST_LOG: the lowest status an answered request is logged with, per choice.
REQUEST_LOGS = {"all": 0, "errors": 400, "none": None}
WARMUPS = ("auto", "none", "default", "all")
AUTHS = ("iam", "google")
# Google's endpoints for CPR_AUTH=google; settings so that tests can stand in for them.
TOKENINFO_URL = "https://oauth2.googleapis.com/tokeninfo"
CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


class Batching(NamedTuple):
    """One version's micro-batching settings (batching.wrap's arguments)."""

    mode: str
    max_size: int
    wait: float


@dataclasses.dataclass(frozen=True)
class Config:
    """What one deployment serves and within which limits.

    `catalog` holds the models when they come from the single-model settings;
    with `CPR_MODELS` it is None until the app reads `models_file`.
    """

    catalog: Catalog | None = None
    models_file: str | None = None
    cache_dir: Path = Path(tempfile.gettempdir()) / "cpr-cache"
    max_model_bytes: int = 500 * 10**6
    max_request_bytes: int = 32 * 10**6
    install_dependencies: bool = False
    delete_after_load: bool = False
    legacy_compat: bool = True
    isolation: str = "auto"
    memory_budget: int | None = None
    log_format: str = "auto"
    request_log: str = "all"
    warmup: str = "auto"
    predict_timeout: float | None = None
    storage_retry_seconds: float = 20.0
    microbatch: str = "true"
    microbatch_max_size: int = 1024
    microbatch_wait: float = 0.002
    auth: str = "iam"
    allowed_principals: tuple[str, ...] = ()
    auth_audiences: tuple[str, ...] = ()
    auth_tokeninfo_url: str = TOKENINFO_URL
    auth_certs_url: str = CERTS_URL
    service_name: str = ""  # K_SERVICE: the function's name, set by Cloud Run
    is_example: bool = False

    @classmethod
    def for_command(cls, *, cache_dir: str | None, install_dependencies: bool, flag: str) -> Config:
        """The settings a command's flags give (`local-predict`, `check`, `batch-predict`):
        `cache_dir` or the default cache, checked as `flag`.

        Raises:
            ConfigError: the cache folder cannot be created or written.
        """
        folder = setting_values.cache_folder(Path(cache_dir or cls.cache_dir), flag)
        return cls(cache_dir=folder, install_dependencies=install_dependencies)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """Builds the configuration from environment variables.

        With no model setting at all, the bundled example is served.

        Raises:
            ConfigError: a variable is unknown or has a value outside what it accepts.
        """
        unknown = sorted(k for k in env if k.startswith("CPR_") and k not in KNOWN)
        if unknown:
            raise ConfigError(
                f"unknown setting {', '.join(unknown)}; known settings are {', '.join(KNOWN)}"
            )
        get = {k: env[k].strip() for k in KNOWN if env.get(k, "").strip()}.get
        raw_isolation = get("CPR_ISOLATION") or "auto"
        isolation = raw_isolation.lower()
        if isolation not in ISOLATIONS:
            raise ConfigError(
                f"CPR_ISOLATION must be one of {', '.join(ISOLATIONS)}; got {raw_isolation!r}"
            )
        budget = get("CPR_MEMORY_BUDGET")
        log_format = setting_values.choice(get, "CPR_LOG_FORMAT", LOG_FORMATS, "auto")
        warmup = (get("CPR_WARMUP") or "auto").lower()
        if warmup in setting_values.TRUE:
            warmup = "default"
        elif warmup in setting_values.FALSE:
            warmup = "none"
        if warmup not in WARMUPS:
            raise ConfigError(
                "CPR_WARMUP must be true (load the default model's default version when a "
                "worker starts), all (every version), false, or auto (true when more than "
                "one worker process serves); "
                f"got {get('CPR_WARMUP')!r}"
            )
        settings = dict(
            max_model_bytes=setting_values.size(get, "CPR_MAX_MODEL_BYTES", cls.max_model_bytes),
            max_request_bytes=setting_values.size(
                get, "CPR_MAX_REQUEST_BYTES", cls.max_request_bytes
            ),
            cache_dir=setting_values.cache_folder(
                Path(get("CPR_CACHE_DIR") or cls.cache_dir), "CPR_CACHE_DIR"
            ),
            install_dependencies=setting_values.flag(get, "CPR_INSTALL_DEPENDENCIES", False),
            delete_after_load=setting_values.flag(get, "CPR_DELETE_AFTER_LOAD", False),
            legacy_compat=setting_values.flag(get, "CPR_LEGACY_COMPAT", True),
            isolation=isolation,
            memory_budget=setting_values.size(get, "CPR_MEMORY_BUDGET", 0) if budget else None,
            log_format=log_format,
            request_log=setting_values.choice(get, "CPR_REQUEST_LOG", tuple(REQUEST_LOGS), "all"),
            warmup=warmup,
            predict_timeout=setting_values.seconds(get, "CPR_PREDICT_TIMEOUT"),
            storage_retry_seconds=(
                setting_values.seconds(get, "CPR_STORAGE_RETRY_SECONDS")
                or cls.storage_retry_seconds
            ),
            **_microbatch(get, cls),
            **_auth(get),
            service_name=env.get("K_SERVICE", ""),
        )
        model = version_fields.check_name(get("CPR_MODEL_NAME") or "default", "CPR_MODEL_NAME")
        version = version_fields.check_name(get("CPR_VERSION_NAME") or "v1", "CPR_VERSION_NAME")
        single = {field: get(name) for field, name in SINGLE_MODEL.items() if get(name)}
        if get("CPR_MODELS"):
            named = [SINGLE_MODEL[f] for f in single]
            named += [n for n in ("CPR_MODEL_NAME", "CPR_VERSION_NAME") if get(n)]
            if named:
                raise ConfigError(
                    f"CPR_MODELS lists the models, so {', '.join(named)} cannot be set too; "
                    "put those settings in the models file"
                )
            return cls(models_file=get("CPR_MODELS"), **settings)
        if not single:
            return cls.example(model, version, **settings)
        return cls(
            catalog=version_fields.single(model, version, single, SINGLE_MODEL.__getitem__),
            **settings,
        )

    @classmethod
    def example(cls, model: str = "default", version: str = "v1", **settings) -> Config:
        """The bundled scikit-learn custom prediction routine from `examples/`."""
        spec = catalog.VersionSpec(
            model=model,
            name=version,
            origin=str(EXAMPLE_DIR / "model"),
            package_uris=(str(EXAMPLE_DIR / "dist" / "my_custom_code-0.1.tar.gz"),),
            prediction_class="predictor.MyPredictor",
            is_example=True,
        )
        models = (catalog.ModelSpec(model, (spec,), version),)
        example = catalog.Catalog(models=models, default_model=model)
        return cls(catalog=example, is_example=True, **settings)

    def logs_request(self, status: int) -> bool:
        """Whether an answer of this status gets a request log entry (CPR_REQUEST_LOG)."""
        lowest = REQUEST_LOGS[self.request_log]
        return lowest is not None and status >= lowest

    def microbatch_for(self, spec: catalog.VersionSpec) -> Batching:
        """How a version's requests merge: its own fields in a models file, else CPR_MICROBATCH*."""
        return Batching(
            mode=spec.microbatch if spec.microbatch is not None else self.microbatch,
            max_size=(
                spec.microbatch_max_size
                if spec.microbatch_max_size is not None
                else self.microbatch_max_size
            ),
            wait=spec.microbatch_wait if spec.microbatch_wait is not None else self.microbatch_wait,
        )

    def describe(self) -> dict:
        """The deployment-wide settings as shown by `GET /`: nothing secret."""
        return {
            "modelsFile": self.models_file,
            "example": self.is_example,
            "cacheDir": str(self.cache_dir),
            "maxModelBytes": self.max_model_bytes,
            "maxRequestBytes": self.max_request_bytes,
            "installDependencies": self.install_dependencies,
            "deleteAfterLoad": self.delete_after_load,
            "legacyCompat": self.legacy_compat,
            "isolation": self.isolation,
            "memoryBudgetBytes": self.memory_budget,
            "requestLog": self.request_log,
            "warmup": self.warmup,
            "predictTimeoutSeconds": self.predict_timeout,
            "storageRetrySeconds": self.storage_retry_seconds,
            "microbatch": self.microbatch,
            "microbatchMaxSize": self.microbatch_max_size,
            "microbatchWaitMs": round(self.microbatch_wait * 1000, 3),
            "auth": self.auth,
            "allowedPrincipals": list(self.allowed_principals),
        }


def _auth(get) -> dict:
    """Who may call: CPR_AUTH, and under google its allow list and Google's endpoints."""
    auth = setting_values.choice(get, "CPR_AUTH", AUTHS, "iam")
    allowed = setting_values.principals(
        get("CPR_ALLOWED_PRINCIPALS") or "", "CPR_ALLOWED_PRINCIPALS"
    )
    if auth == "google" and not allowed:
        raise ConfigError(
            "CPR_AUTH=google needs CPR_ALLOWED_PRINCIPALS: the user:EMAIL, "
            "serviceAccount:EMAIL or domain:DOMAIN entries to admit; it is empty, which "
            "would refuse every caller"
        )
    if auth != "google" and allowed:
        raise ConfigError(
            "CPR_ALLOWED_PRINCIPALS is only checked with CPR_AUTH=google; under "
            f"CPR_AUTH={auth} grant callers the invoker role instead"
        )
    urls = {}
    for field, name, default in (
        ("auth_tokeninfo_url", "CPR_AUTH_TOKENINFO_URL", TOKENINFO_URL),
        ("auth_certs_url", "CPR_AUTH_CERTS_URL", CERTS_URL),
    ):
        urls[field] = get(name) or default
        if not urls[field].startswith(("https://", "http://127.0.0.1:", "http://localhost:")):
            raise ConfigError(f"{name} must be an https:// URL; got {urls[field]!r}")
    audiences = tuple((get("CPR_AUTH_AUDIENCES") or "").replace(",", " ").split())
    return dict(auth=auth, allowed_principals=allowed, auth_audiences=audiences, **urls)


def _microbatch(get, cls) -> dict:
    """The deployment's micro-batching: CPR_MICROBATCH*, checked as a version's fields are."""
    names = {
        "microbatch": "CPR_MICROBATCH",
        "microbatch_max_size": "CPR_MICROBATCH_MAX_SIZE",
        "microbatch_wait_ms": "CPR_MICROBATCH_WAIT_MS",
    }
    fields = version_fields.microbatch_fields(lambda field: get(names[field]), names.__getitem__)
    return {k: getattr(cls, k) if v is None else v for k, v in fields.items()}
