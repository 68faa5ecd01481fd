"""A models file: read from Cloud Storage or a local path, and parsed into the catalog."""

from __future__ import annotations

from .catalog import Catalog, ModelSpec
from .errors import ConfigError, CprError
from .version_fields import (
    VERSION_FIELDS,
    canonical,
    checked_name,
    kind_of,
    no_unknown,
    version_spec,
)

_MODEL_FIELDS = {
    "versions": "versions",
    "default_version": "default_version",
    "defaultVersion": "default_version",
    "description": "description",
}


def load(uri: str, storage) -> Catalog:
    """The catalog in the models file at `uri` (`gs://` or local), read through `storage`.

    Raises:
        ConfigError: the file cannot be read, or is not a valid models file.
    """
    try:
        path = storage.fetch(storage.list_file(uri, what="models file")).path
        text = path.read_text(encoding="utf-8")
    except CprError as exc:
        raise ConfigError(f"CPR_MODELS: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"CPR_MODELS: models file {uri} cannot be read: {exc}") from exc
    return parse(text, uri)


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
            f"model names to models; got {kind_of(data)}"
            + (f" with keys {', '.join(map(str, data))}" if isinstance(data, dict) else "")
        )
    no_unknown(data, ("models", "default_model", "defaultModel"), f"models file {source}")
    models = tuple(_model(source, name, body) for name, body in data["models"].items())
    default = data.get("default_model", data.get("defaultModel", models[0].name))
    if isinstance(default, bool):
        checked_name(default, f"models file {source}, default_model")
    if default not in {m.name for m in models}:
        raise ConfigError(
            f"models file {source}: default_model {default!r} is not one of the models: "
            f"{', '.join(m.name for m in models)}"
        )
    return Catalog(models=models, default_model=default, source=source)


def _model(source: str, name, body) -> ModelSpec:
    where = f"models file {source}, model {name!r}"
    name = checked_name(name, where)
    if not isinstance(body, dict) or not isinstance(body.get("versions"), dict):
        raise ConfigError(
            f"{where} must be a mapping with a 'versions' mapping of version names to "
            f"versions; got {kind_of(body)}"
        )
    fields = canonical(body, _MODEL_FIELDS, where)
    if not fields["versions"]:
        raise ConfigError(f"{where} has no versions; list at least one under 'versions'")
    versions = []
    for version, vbody in fields["versions"].items():
        vwhere = f"{where}, version {version!r}"
        version = checked_name(version, vwhere)
        if not isinstance(vbody, dict):
            raise ConfigError(f"{vwhere} must be a mapping of fields; got {kind_of(vbody)}")
        vfields = canonical(vbody, VERSION_FIELDS, vwhere)
        # Messages name each field as the file spells it (microbatchWaitMs, deploymentUri).
        spelled = {VERSION_FIELDS[key]: key for key in vbody}
        versions.append(
            version_spec(
                name, version, vfields, lambda f, w=vwhere, s=spelled: f"{w}, {s.get(f, f)}"
            )
        )
    names = [v.name for v in versions]
    default = fields.get("default_version")
    if isinstance(default, bool):
        checked_name(default, f"{where}, default_version")
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
