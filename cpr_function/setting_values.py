"""Reading one `CPR_*` setting's text: a size, a number of seconds, a choice or a flag.

Each reader takes `get` (the setting's text by name, None when unset) and the setting's
name, which every error names with what it takes and what it received.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError
from .version_fields import FALSE_WORDS, TRUE_WORDS

TRUE = TRUE_WORDS
FALSE = (*FALSE_WORDS, "")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def size(get, name: str, default: int) -> int:
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


def seconds(get, name: str) -> float | None:
    raw = get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ConfigError(
            f"{name} must be a positive number of seconds such as 30 or 2.5; got {raw!r}"
        )
    return value


def choice(get, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = get(name)
    if raw is None:
        return default
    if raw.lower() not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return raw.lower()


def flag(get, name: str, default: bool) -> bool:
    raw = get(name)
    if raw is None:
        return default
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise ConfigError(f"{name} must be true or false; got {raw!r}")


def cache_folder(path: Path, name: str) -> Path:
    """`path`, made if missing, once a file could be created in it and removed: the cache
    must be writable, or every request would fail later with nothing said of why.

    Raises:
        ConfigError: naming the setting, the folder, the step that failed and the reason.
    """
    import tempfile

    step = "creating the folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        step = "writing a file in it"
        with tempfile.NamedTemporaryFile(dir=path, prefix=".cpr-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{name} {path} cannot hold the cache: {step} failed: {exc.strerror or exc}; "
            "give a folder this process can create and write (on Cloud Functions and Cloud "
            "Run, one under /tmp)"
        ) from None
    return path


def principals(raw: str, name: str) -> tuple[str, ...]:
    """The allow list from `user:EMAIL`, `serviceAccount:EMAIL`, `domain:DOMAIN` or a bare
    email, separated by commas or spaces; bare emails become `user:` entries.

    Raises:
        ConfigError: an entry is none of those.
    """
    kinds = ("user", "serviceAccount", "group", "domain")
    found = []
    for entry in raw.replace(",", " ").split():
        kind, sep, value = entry.partition(":")
        if not sep:
            kind, value = "user", entry
        if kind == "group":
            raise ConfigError(
                f"{name}: {entry!r} is a group, which a token does not show membership of; "
                "list its members, or use iam mode and grant the group the invoker role"
            )
        if kind not in kinds or not value or (kind != "domain") != ("@" in value):
            raise ConfigError(
                f"{name} takes user:EMAIL, serviceAccount:EMAIL, domain:DOMAIN or an email, "
                f"separated by commas; got {entry!r}"
            )
        found.append(f"{kind}:{value.lower()}")
    return tuple(found)
