"""The Beam model handler: any model the function serves, loaded once per worker process.

`RunInference(CprModelHandler(model_dir=..., prediction_class=...))` predicts a
PCollection of instances (decoded JSON values, as a request's `instances` hold them).
Each result is a `PredictionResult(example=instance, inference=...)`, the inference being
the prediction as the function would answer it in JSON (lists, numbers, strings, dicts),
or a `Failure` for an instance the model refused. A batch whose predict call raises is
split until the failing instances stand alone, so a bad instance never fails the good
ones beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from .. import protocol
from ..errors import ConfigError, CprError, PredictorError

# Models this process loaded before Beam ran, by what their handler loads: the worker
# running in this process, or forked from it, takes its model from here.
_LOADED: dict[str, Any] = {}
# What each handler's settings resolved to in this process (and the processes forked
# from it): a models file is read once, not by each step that needs the version.
_RESOLVED: dict[str, tuple] = {}

_FLAGS = {
    "origin": "model_dir",
    "package_uris": "package_uris",
    "prediction_class": "prediction_class",
    "framework": "framework",
}


@dataclasses.dataclass(frozen=True)
class Failure:
    """An instance the model could not predict: the HTTP status the function would
    answer with, and its message."""

    status: int
    message: str


class CprModelHandler(ModelHandler[Any, PredictionResult, Any]):
    """Runs a custom routine, framework or MLflow model with the function's own loader,
    cache and codecs.

    Args:
        model_dir: the model directory (`gs://`, local path or `file://`), as
            `CPR_MODEL_DIR`; or give `models` and `model`.
        package_uris: the routine's packages (.tar.gz, .zip, .whl).
        prediction_class: `module.Class` of a custom routine.
        framework: scikit-learn, xgboost, tensorflow or mlflow; found from the files when
            neither this nor `prediction_class` is given.
        models: a models file (`gs://` or local), as `CPR_MODELS`.
        model: the model in `models` (its default model when None).
        version: the version of `model` (its default version when None).
        cache_dir: where downloads are kept (the function's default under /tmp otherwise).
        install_dependencies: pip-install the packages' declared dependencies.
        kwargs: the top-level request fields besides `instances` (keyword arguments of a
            routine's `predict`, or `signature_name`); RunInference's `inference_args`
            add to them.
        **batching: Beam's batching knobs (`min_batch_size`, `max_batch_size`, ...).
    """

    def __init__(
        self,
        model_dir: str | None = None,
        *,
        package_uris: Sequence[str] | str = (),
        prediction_class: str | None = None,
        framework: str | None = None,
        models: str | None = None,
        model: str | None = None,
        version: str | None = None,
        cache_dir: str | None = None,
        install_dependencies: bool = False,
        kwargs: dict[str, Any] | None = None,
        **batching,
    ):
        super().__init__(**batching)
        if (model_dir is None) == (models is None):
            raise ValueError("give the model as model_dir, or as models (with model, version)")
        self._fields = {
            "origin": model_dir,
            "package_uris": list(package_uris)
            if not isinstance(package_uris, str)
            else package_uris,
            "prediction_class": prediction_class,
            "framework": framework,
        }
        self._models = (models, model, version)
        self._cache_dir = cache_dir
        self._install_dependencies = install_dependencies
        self._kwargs = _checked_kwargs(kwargs or {})

    def resolve(self):
        """The configuration and version spec this handler loads, found once a process.

        Raises:
            ConfigError: the model flags are wrong, or the models file has no such version.
        """
        key = self._key()
        if key not in _RESOLVED:
            _RESOLVED[key] = self._resolved()
        return _RESOLVED[key]

    def _resolved(self):
        from ..config import Config

        config = Config.for_command(
            cache_dir=self._cache_dir,
            install_dependencies=self._install_dependencies,
            flag="cache_dir",
        )
        models, model, version = self._models
        if models is None:
            from ..version_fields import version_spec

            return config, version_spec("batch", "v1", self._fields, lambda f: _FLAGS.get(f, f))
        return config, _from_models_file(config, models, model, version)

    def preload(self) -> int | None:
        """Loads the model now, for the workers that will run in this process (or be
        forked from it) to take; the call size it allows (`call_size`).

        Raises:
            CprError: the model could not be loaded.
        """
        model = _LOADED[self._key()] = self.load_model()
        return call_size(model)

    def load_model(self):
        """The loaded model, once per worker process (Beam shares it across its threads).

        Raises:
            CprError: the model could not be loaded.
        """
        loaded = _LOADED.get(self._key())
        if loaded is not None:
            return loaded
        from ..loading.storage import Storage
        from ..serving.model import LazyModel

        config, spec = self.resolve()
        loaded = LazyModel(spec, config, Storage.configured(config))
        loaded.get()
        return loaded

    def declared_call_size(self) -> int | None:
        """`call_size` as far as the settings tell without loading the model (for a runner
        elsewhere, such as Dataflow): for a framework they name whose adapter declares
        `batchable = True`, the version's micro-batching size; None for what only loading
        could tell (a custom routine, a framework found from the files) and for a version
        whose requests are not merged.

        Raises:
            ConfigError: the model flags are wrong, or the models file has no such version.
        """
        from ..frameworks import declares_batchable

        config, spec = self.resolve()
        batching = config.microbatch_for(spec)
        if batching.mode == "false" or not declares_batchable(spec.framework):
            return None
        return batching.max_size

    def _key(self) -> str:
        return repr((self._fields, self._models, self._cache_dir, self._install_dependencies))

    def run_inference(
        self, batch: Sequence[Any], model, inference_args: dict[str, Any] | None = None
    ) -> list[PredictionResult]:
        fields = {**self._kwargs, **(inference_args or {})}
        instances = list(batch)
        outcomes = isolate(lambda part: _predict(model, part, fields), instances)
        return [PredictionResult(i, o) for i, o in zip(instances, outcomes, strict=True)]

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        _checked_kwargs(inference_args or {})

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        # Beam's default pickles every batch once more only to measure it.
        return sum(len(protocol.dumps(i)) for i in batch)

    def get_metrics_namespace(self) -> str:
        return "cpr_function"


def call_size(model) -> int | None:
    """The most instances the function would give the loaded model's predictor in one
    call when it merges requests: its version's `microbatch_max_size` in a models file,
    1024 by default. The function merges them for a predictor that says `batchable = True`
    (the built-in scikit-learn and XGBoost adapters do: their answers are the same however
    the instances are split into calls), and under `microbatch: all` for one that does
    not say `batchable = False`. None when it does not merge them."""
    from ..serving.batching import Batched

    served = model.get()
    return served.batcher.max_size if isinstance(served, Batched) else None


def isolate(predict: Callable[[list], list], instances: list) -> list:
    """`predict(instances)`; where it raises, the same on each half, down to single
    instances, which get a `Failure` each. A bad instance among n costs about 2 log2(n)
    more calls, and no good instance is lost."""
    try:
        return predict(instances)
    except CprError as exc:
        if len(instances) == 1:
            return [Failure(exc.status_code, str(exc))]
    half = len(instances) // 2
    return isolate(predict, instances[:half]) + isolate(predict, instances[half:])


def _predict(model, instances: list, fields: dict[str, Any]) -> list:
    """One predict call, answered as the function answers it: one JSON value an instance.

    Raises:
        CprError: the model refused the instances or raised, or answered a different
            number of predictions.
    """
    body = orjson.loads(protocol.encode(model.respond({**fields, "instances": instances})))
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(instances):
        shown = protocol.json_type(predictions) if not isinstance(predictions, list) else None
        got = f"a JSON {shown}" if shown else f"{len(predictions)} predictions"
        raise PredictorError(
            f"the model answered {got} for {len(instances)} instances; batch prediction "
            'needs {"predictions": [...]} with one prediction an instance'
        )
    return predictions


def _from_models_file(config, models: str, model: str | None, version: str | None):
    from .. import models_file
    from ..loading.storage import Storage

    catalog = models_file.load(models, Storage.configured(config))
    try:
        spec = catalog.model(model).version(version)
    except CprError as exc:
        raise ConfigError(f"models file {models}: {exc}") from None
    if not spec.in_process:
        raise ConfigError(
            f"models file {models}: model {spec.model} version {spec.name} forwards to "
            f"{spec.forward_to}; batch prediction runs a model directory, not a deployed model"
        )
    return spec


def _checked_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(kwargs, dict):
        raise ValueError(
            f"kwargs must be a JSON object of request fields; got {type(kwargs).__name__}"
        )
    if "instances" in kwargs:
        raise ValueError("kwargs cannot hold 'instances': each batch supplies them")
    return kwargs
