"""The predictor contracts users already wrote (AI Platform's, Vertex AI's), and the one
every loaded version answers.

Whatever serves a version, it is a servable: `respond(payload, vertex=)` takes the decoded
request body and returns the response body. `Routine` adapts AI Platform's
`predict(instances, **kwargs)`; `VertexRoutine` adapts Vertex AI's `load / preprocess /
predict / postprocess`. Framework adapters and forwarding answer the same way.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from . import protocol
from .shims import PREDICTION_COUNT, Shims

log = logging.getLogger(__name__)


@runtime_checkable
class Predictor(Protocol):
    """What AI Platform's custom prediction routines implement; nothing to subclass."""

    def predict(self, instances: list, **kwargs: Any) -> Any:
        """Returns one prediction per instance."""

    @classmethod
    def from_path(cls, model_dir: str) -> Predictor:
        """Loads the artifacts in `model_dir` and returns a ready predictor."""


class VertexPredictor(Protocol):
    """What `google.cloud.aiplatform.prediction.Predictor` subclasses implement."""

    def load(self, artifacts_uri: str) -> None:
        """Loads the artifacts found at `artifacts_uri`."""

    def preprocess(self, prediction_input: Any) -> Any:
        """Turns the request body into the input of `predict`."""

    def predict(self, instances: Any) -> Any:
        """Predicts on what `preprocess` returned."""

    def postprocess(self, prediction_results: Any) -> Any:
        """Turns what `predict` returned into the response body."""


class Servable(Protocol):
    """A loaded version, whatever its kind: a request body in, a response body out."""

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> Any:
        """The response body for a decoded request body."""


class Routine:
    """Serves a predictor with AI Platform's `predict(instances, **kwargs)`.

    Whatever `predict` returns is the answer's `predictions`, as on AI Platform,
    even when it is not one prediction per instance (some routines read
    `instances` as one row of feature values). Such a predictor cannot have its
    requests merged or its answers cut into parts: the first time it answers
    another count, `one_per_instance` turns false for good, and the shim is noted.
    """

    def __init__(self, predictor: Any, shims: Shims | None = None):
        self.predictor = predictor
        self.shims = shims
        self.one_per_instance = True
        self._counts_logged: set[tuple[int | None, int]] = set()

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> dict[str, Any]:
        instances, kwargs = protocol.instances_of(payload, vertex=vertex)
        return {"predictions": self.predict(instances, kwargs)}

    def predict(self, instances: list, kwargs: dict[str, Any]) -> Any:
        """What the predictor returns for `instances`, whatever its length."""
        predictions = self.predictor.predict(instances, **kwargs)
        count = _count(predictions)
        if count != len(instances):
            self._not_one_per_instance(count, len(instances), type(predictions).__name__)
        return predictions

    def _not_one_per_instance(self, count: int | None, instances: int, kind: str) -> None:
        got = f"{count} predictions" if count is not None else f"a {kind}, not a list,"
        # Logged once for each pair of counts: a routine that reads instances as one row
        # answers every request so, and one line tells as much as a line a request.
        if (count, instances) not in self._counts_logged and len(self._counts_logged) < 64:
            self._counts_logged.add((count, instances))
            log.warning(
                "%sthe predictor returned %s for %d instances; answered as it is, as AI "
                "Platform did (predict should return one prediction per instance)",
                f"model {self.shims.model} version {self.shims.version}: " if self.shims else "",
                got,
                instances,
            )
        if self.one_per_instance:
            self.one_per_instance = False
            if self.shims is not None:
                self.shims.note(
                    PREDICTION_COUNT,
                    f"predict returned {got} for {instances} instances: its predictions are "
                    "answered as returned, and its requests are never merged or split",
                )


class VertexRoutine:
    """Serves a Vertex AI predictor: the whole body to `preprocess`, `postprocess`'s result back."""

    def __init__(self, predictor: Any):
        self.predictor = predictor

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> Any:
        predictor = self.predictor
        # Vertex AI's base class passes both through unchanged; a class need not define them.
        preprocess = getattr(predictor, "preprocess", _same)
        postprocess = getattr(predictor, "postprocess", _same)
        return postprocess(predictor.predict(preprocess(payload)))


def _count(predictions: Any) -> int | None:
    """How many predictions a list, tuple, array or pandas object holds; None for other values."""
    if isinstance(predictions, list | tuple):
        return len(predictions)
    shape = getattr(predictions, "shape", None)
    if isinstance(shape, tuple) and shape:
        return shape[0]
    return None


def _same(value: Any) -> Any:
    """Vertex AI's default `preprocess` and `postprocess`."""
    return value
