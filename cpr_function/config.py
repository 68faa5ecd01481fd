"""The deployment's settings: every `CPR_*` variable, parsed and checked once."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples"

FRAMEWORKS = ("scikit-learn", "xgboost", "tensorflow", "mlflow")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

KNOWN = (
    "CPR_ORIGIN",
    "CPR_PACKAGE_URIS",
    "CPR_PREDICTION_CLASS",
    "CPR_FRAMEWORK",
    "CPR_MODEL_NAME",
    "CPR_VERSION_NAME",
    "CPR_CACHE_DIR",
    "CPR_MAX_MODEL_BYTES",
    "CPR_MAX_REQUEST_BYTES",
    "CPR_INSTALL_DEPENDENCIES",
    "CPR_LEGACY_COMPAT",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """What one deployment serves and within which limits."""

    origin: str
    package_uris: tuple[str, ...] = ()
    prediction_class: str | None = None
    framework: str | None = None
    model_name: str = "default"
    version_name: str = "v1"
    cache_dir: Path = Path(tempfile.gettempdir()) / "cpr-cache"
    max_model_bytes: int = 500 * 10**6
    max_request_bytes: int = 32 * 10**6
    install_dependencies: bool = False
    legacy_compat: bool = True
    is_example: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """Builds the configuration from environment variables.

        With none of `CPR_ORIGIN`, `CPR_PACKAGE_URIS`, `CPR_PREDICTION_CLASS`
        set, the bundled example is served.

        Raises:
            ConfigError: a variable is unknown or has a value outside what it accepts.
        """
        unknown = sorted(k for k in env if k.startswith("CPR_") and k not in KNOWN)
        if unknown:
            raise ConfigError(
                f"unknown setting {', '.join(unknown)}; known settings are {', '.join(KNOWN)}"
            )
        get = {k: env[k].strip() for k in KNOWN if env.get(k, "").strip()}.get
        limits = dict(
            max_model_bytes=_size(get, "CPR_MAX_MODEL_BYTES", cls.max_model_bytes),
            max_request_bytes=_size(get, "CPR_MAX_REQUEST_BYTES", cls.max_request_bytes),
            cache_dir=Path(get("CPR_CACHE_DIR") or cls.cache_dir),
            install_dependencies=_flag(get, "CPR_INSTALL_DEPENDENCIES", False),
            legacy_compat=_flag(get, "CPR_LEGACY_COMPAT", True),
            model_name=_name(get, "CPR_MODEL_NAME", cls.model_name),
            version_name=_name(get, "CPR_VERSION_NAME", cls.version_name),
        )
        framework = get("CPR_FRAMEWORK")
        if framework is not None and framework.lower() not in FRAMEWORKS:
            raise ConfigError(
                f"CPR_FRAMEWORK must be one of {', '.join(FRAMEWORKS)}; got {framework!r}"
            )
        model_vars = ("CPR_ORIGIN", "CPR_PACKAGE_URIS", "CPR_PREDICTION_CLASS", "CPR_FRAMEWORK")
        if not any(get(k) for k in model_vars):
            return cls.example(**limits)
        origin = get("CPR_ORIGIN")
        if origin is None:
            raise ConfigError(
                "CPR_ORIGIN must name the model directory (gs://bucket/prefix, a local "
                "directory or a file:// URI) when CPR_PACKAGE_URIS, CPR_PREDICTION_CLASS "
                "or CPR_FRAMEWORK is set; it is unset"
            )
        prediction_class = get("CPR_PREDICTION_CLASS")
        if prediction_class is not None:
            _check_class_path(prediction_class)
        if prediction_class is not None and framework is not None:
            raise ConfigError(
                "set CPR_PREDICTION_CLASS for custom code or CPR_FRAMEWORK for a framework "
                f"model, not both; got {prediction_class!r} and {framework!r}"
            )
        return cls(
            origin=origin,
            package_uris=_uri_list(get("CPR_PACKAGE_URIS")),
            prediction_class=prediction_class,
            framework=framework.lower() if framework else None,
            **limits,
        )

    @classmethod
    def example(cls, **limits) -> Config:
        """The bundled scikit-learn custom prediction routine from `examples/`."""
        return cls(
            origin=str(EXAMPLE_DIR / "model"),
            package_uris=(str(EXAMPLE_DIR / "dist" / "my_custom_code-0.1.tar.gz"),),
            prediction_class="predictor.MyPredictor",
            is_example=True,
            **limits,
        )

    def describe(self) -> dict:
        """The settings as shown by `GET /`: names and URIs, nothing secret."""
        return {
            "model": self.model_name,
            "version": self.version_name,
            "origin": self.origin,
            "packageUris": list(self.package_uris),
            "predictionClass": self.prediction_class,
            "framework": self.framework,
            "example": self.is_example,
            "maxModelBytes": self.max_model_bytes,
            "maxRequestBytes": self.max_request_bytes,
            "installDependencies": self.install_dependencies,
            "legacyCompat": self.legacy_compat,
        }


def _size(get, name: str, default: int) -> int:
    raw = get(name)
    if raw is None:
        return default
    match = _SIZE.match(raw)
    if not match:
        raise ConfigError(
            f"{name} must be a size in bytes such as 500000000, 500MB or 1GiB; got {raw!r}"
        )
    number, unit = float(match[1]), (match[2] or "").lower()
    base = 1024 if "i" in unit else 1000
    factor = _UNITS[unit[:1]] if base == 1000 else base ** "bkmgt".index(unit[0])
    value = int(number * factor)
    if value <= 0:
        raise ConfigError(f"{name} must be a positive size; got {raw!r}")
    return value


def _flag(get, name: str, default: bool) -> bool:
    raw = get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false; got {raw!r}")


def _name(get, name: str, default: str) -> str:
    raw = get(name) or default
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", raw):
        raise ConfigError(
            f"{name} must be letters, digits, '_', '.' or '-', starting with a letter or "
            f"digit; got {raw!r}"
        )
    return raw


def _check_class_path(path: str) -> None:
    parts = path.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise ConfigError(
            f"CPR_PREDICTION_CLASS must be module.Class, like predictor.MyPredictor; got {path!r}"
        )


def _uri_list(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    uris = tuple(u.strip() for u in raw.split(",") if u.strip())
    for uri in uris:
        if not uri.endswith((".tar.gz", ".tgz", ".zip", ".whl")):
            raise ConfigError(
                "CPR_PACKAGE_URIS must list .tar.gz, .zip or .whl packages separated by "
                f"commas; got {uri!r}"
            )
    return uris
