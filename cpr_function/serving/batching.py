"""Merging concurrent requests to one version into one predict call.

A predict call has a cost of its own, whatever it is given: a NumPy conversion, input
validation, a walk over every tree of a forest. For the small requests online endpoints
get, that cost is most of the call, so one call on the instances of several concurrent
requests costs about what a call on one of them does. A `Batcher` merges them:

- A request that finds no call running goes at once, alone: a lone client never waits.
  Requests that arrive while a call runs queue, and go together in the next call.
- When the last call held several requests, others are in flight, and the next call
  waits up to `wait` seconds for as many to join (never past `max_size` instances), so
  that steady concurrent load forms full batches. The first call that finds fewer ends
  the waiting until a call holds several again.
- Only requests with equal keyword arguments merge, compared as JSON (so `1`, `1.0` and
  `true` differ); the others keep their place for a later call.
- A merged call that fails in any way (it raises, returns another number of predictions
  than instances, or something that cannot be cut into rows) is made again request by
  request, so that each request gets what it would have got alone: a malformed request
  fails alone, never the requests it was merged with.

No thread of its own: the request that starts a call makes it, for all, and hands the
next call to the first request still queued. This is only right for predictors whose
prediction for an instance does not depend on the other instances of the call, which is
why a predictor opts in (`batchable = True`) or the deployment vouches for it
(`CPR_MICROBATCH=all`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from .. import protocol
from ..errors import PredictTimeout
from ..predictor import Routine

log = logging.getLogger(__name__)

# Predicts for several requests' instances in one call: one result per list of instances.
Call = Callable[[list[list], dict[str, Any]], list]


def wrap(servable: Any, *, mode: str, max_size: int, wait: float) -> Any:
    """The loaded version, with its requests merged when its predictor allows it.

    Args:
        servable: what loading the version gave.
        mode: `false` merges nothing; `true` merges for predictors whose class says
            `batchable = True` (the built-in scikit-learn and XGBoost adapters do);
            `all` also for AI Platform predictors that do not say, but not for those
            that say `batchable = False`.
        max_size: the most instances one call is given.
        wait: the longest a call waits for more requests to join, in seconds.

    Returns:
        A `Batched` servable, or `servable` as it was: Vertex AI predictors and the
        TensorFlow and MLflow adapters take whole bodies, never merged.
    """
    if mode == "false" or not isinstance(servable, Routine):
        return servable
    declared = getattr(servable.predictor, "batchable", None)
    merges = mode == "all" if declared is None else bool(declared)
    return Batched(servable, max_size=max_size, wait=wait) if merges else servable


class Batched:
    """Serves AI Platform's `predict(instances, **kwargs)`, concurrent requests merged."""

    def __init__(self, routine: Routine, *, max_size: int, wait: float):
        self.routine = routine
        self.batcher = Batcher(self.predict, max_size=max_size, wait=wait)

    @property
    def merges(self) -> bool:
        """False for good once the predictor answered a call with another count than it was
        given: its answers can no longer be cut back into requests."""
        return self.routine.one_per_instance

    def schemas(self) -> dict[str, Any] | None:
        """The merged routine's request and response schemas, when it declares them."""
        describe = getattr(self.routine, "schemas", None)
        return describe() if describe is not None else None

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> dict[str, Any]:
        instances, kwargs = protocol.instances_of(payload, vertex=vertex)
        if not self.merges:
            return {"predictions": self.routine.predict(instances, kwargs)}
        return {"predictions": self.batcher.predict(instances, kwargs)}

    def predict(self, groups: list[list], kwargs: dict[str, Any]) -> list:
        """One call on every group's instances; the predictions cut back into one part per group.

        A merged call answered with another count than the instances it was given
        (the predictor reads them some other way) is made again group by group, so
        that no request ever gets another's predictions, and merging stops.

        Raises:
            ValueError: the predictions cannot be cut into rows.
            BaseException: what the predictor raised.
        """
        if len(groups) == 1 or not self.merges:
            return [self.routine.predict(group, kwargs) for group in groups]
        merged = [instance for group in groups for instance in group]
        predictions = self.routine.predict(merged, kwargs)
        if not self.merges:
            log.warning(
                "a predict call merging %d requests was not answered one prediction per "
                "instance: each request is predicted alone, now and from now on",
                len(groups),
            )
            return [self.routine.predict(group, kwargs) for group in groups]
        return split(predictions, [len(g) for g in groups])


class Batcher:
    """Gives concurrent requests' instances to one call.

    `call(groups, kwargs)` predicts for every group (a request's instances) at once and
    returns one result per group, in order, or raises.
    """

    def __init__(self, call: Call, *, max_size: int, wait: float):
        self._call = call
        self.max_size = max_size
        self.wait = wait
        self._lock = threading.Lock()
        self._joined = threading.Condition(self._lock)
        self._queue: list[_Request] = []
        self._queued_instances = 0
        self._busy = False  # a request is making calls; the others queue
        self._waiting = False  # ...and it waits for `_expected` of them
        self._expected = 1  # requests in the last call
        self.calls = 0
        self.requests = 0
        self.largest = 0

    def predict(self, instances: list, kwargs: dict[str, Any]) -> Any:
        """The predictions for `instances`, from a call they may share with other requests'.

        Raises:
            BaseException: what `predict` raised for these instances, given alone.
        """
        if len(instances) >= self.max_size:
            return self._call([instances], kwargs)[0]  # a full call already
        request = _Request(instances, kwargs)
        with self._lock:
            self._queue.append(request)
            self._queued_instances += len(instances)
            follows = self._busy
            if follows:
                request.signal = threading.Lock()
                request.signal.acquire()
                if self._waiting and self._enough():
                    self._joined.notify()
            self._busy = True
        if follows:
            request.signal.acquire()  # released once answered, or when it is to lead
            if not request.leads:
                return request.outcome()
        self._lead()
        return request.outcome()

    def status(self) -> dict[str, Any]:
        """What `GET /` shows: the settings, and how many requests the calls merged."""
        return {
            "maxSize": self.max_size,
            "waitMs": round(self.wait * 1000, 3),
            "calls": self.calls,
            "requests": self.requests,
            "largestCall": self.largest,
        }

    def _enough(self) -> bool:
        return len(self._queue) >= self._expected or self._queued_instances >= self.max_size

    def _lead(self) -> None:
        """Makes one call for the request first in the queue (this thread's) and others."""
        with self._lock:
            batch = self._take()
        try:
            self._run(batch)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.leads = True
                    successor.signal.release()
                else:
                    self._busy = False

    def _take(self) -> list[_Request]:
        """Removes the next call's requests from the queue; called with the lock held."""
        if self.wait > 0 and self._expected > 1 and not self._enough():
            deadline = time.monotonic() + self.wait
            self._waiting = True
            while not self._enough() and (left := deadline - time.monotonic()) > 0:
                self._joined.wait(left)
            self._waiting = False
        key = self._queue[0].key
        batch, rest, size = [], [], 0
        for request in self._queue:
            if request.key == key and size + len(request.instances) <= self.max_size:
                batch.append(request)
                size += len(request.instances)
            else:
                rest.append(request)
        self._queue = rest
        self._queued_instances -= size
        self._expected = len(batch)
        self.calls += 1
        self.requests += len(batch)
        self.largest = max(self.largest, size)
        return batch

    def _run(self, batch: list[_Request]) -> None:
        if len(batch) > 1:
            try:
                parts = self._call([r.instances for r in batch], batch[0].kwargs)
                if len(parts) != len(batch):
                    raise ValueError(f"{len(parts)} results for {len(batch)} requests")
            except PredictTimeout as exc:
                # Out of time: alone, each would run out of time again, one after the other.
                for request in batch:
                    request.answer(None, PredictTimeout(str(exc)))
                return
            except BaseException as exc:  # noqa: BLE001 - each request is answered alone below
                log.info(
                    "a predict call merging %d requests failed (%s); predicting each alone",
                    len(batch),
                    type(exc).__name__,
                )
            else:
                for request, part in zip(batch, parts, strict=True):
                    request.answer(part, None)
                return
        for request in batch:
            try:
                (result,) = self._call([request.instances], request.kwargs)
            except BaseException as exc:  # noqa: BLE001 - raised again in the request's thread
                request.answer(None, exc)
            else:
                request.answer(result, None)


class _Request:
    """One request's instances, and once its call is made, its predictions or error."""

    __slots__ = ("instances", "kwargs", "key", "signal", "leads", "result", "error")

    def __init__(self, instances: list, kwargs: dict[str, Any]):
        self.instances = instances
        self.kwargs = kwargs
        self.key = _key(kwargs)
        self.signal: threading.Lock | None = None  # held until a follower may go on
        self.leads = False
        self.result: Any = None
        self.error: BaseException | None = None

    def answer(self, result: Any, error: BaseException | None) -> None:
        self.result, self.error = result, error
        if self.signal is not None:
            self.signal.release()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def _key(kwargs: dict[str, Any]) -> Any:
    """What requests must share to merge: their keyword arguments, as sorted JSON."""
    if not kwargs:
        return b""
    try:
        return orjson.dumps(kwargs, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return object()  # not JSON: merges with nothing


def split(predictions: Any, counts: Sequence[int]) -> list:
    """`predictions` cut into consecutive parts of `counts` rows, each of its own type.

    Raises:
        ValueError: they cannot be cut into rows, or hold another number of rows.
    """
    rows = getattr(predictions, "iloc", None)  # pandas: cut by position, not by label
    has_rows = isinstance(predictions, list | tuple) or len(getattr(predictions, "shape", ())) > 0
    if rows is None and has_rows:
        rows = predictions
    if rows is None or len(predictions) != sum(counts):
        raise ValueError(f"cannot cut {type(predictions).__name__} into {sum(counts)} rows")
    parts, start = [], 0
    for count in counts:
        parts.append(rows[start : start + count])
        start += count
    return parts
