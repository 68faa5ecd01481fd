"""Sending instances to a deployed model: batches sent concurrently, retried, joined in order.

The function's forward mode and the client library (`cpr_function.remote.client`) both use it.
Bodies are raw JSON, so integers reach the upstream as integers (the aiplatform gapic
client would turn them into floats through protobuf `Value`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import orjson

from ..errors import (
    BadRequest,
    CprError,
    Relayed,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ..protocol import dumps
from ..shims import PREDICTION_COUNT, Shims

log = logging.getLogger(__name__)

# AI Platform's limit on one online prediction request.
MAX_BATCH_BYTES = 1_500_000
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class Policy:
    """How instances are split and sent.

    Attributes:
        batch_size: most instances per upstream call.
        concurrency: most calls in flight at once.
        timeout: seconds to wait for one call's answer.
        retries: further attempts after a failed call (429, 5xx, connection errors, timeouts).
        deadline: seconds one batch may take over all its attempts.
        backoff: the first wait between attempts; it doubles each time, with full jitter.
        backoff_max: the longest wait between attempts.
        max_batch_bytes: most bytes of JSON instances per call.
    """

    batch_size: int = 100
    concurrency: int = 16
    timeout: float = 60.0
    retries: int = 5
    deadline: float = 300.0
    backoff: float = 0.5
    backoff_max: float = 10.0
    max_batch_bytes: int = MAX_BATCH_BYTES


@dataclasses.dataclass(frozen=True)
class Target:
    """Where batches go, and whether the body is Vertex AI's (`parameters`) or v1's."""

    url: str
    vertex: bool = False

    @property
    def shown(self) -> str:
        """The URL as messages and the status show it: a user:password in it masked."""
        scheme, sep, rest = self.url.partition("://")
        host, slash, path = rest.partition("/")
        if "@" not in host:
            return self.url
        return f"{scheme}{sep}***@{host.rpartition('@')[2]}{slash}{path}"

    @classmethod
    def named(cls, name: str, api_endpoint: str | None) -> Target:
        """The `:predict` URL of a v1 model or version, or of a Vertex AI endpoint.

        Raises:
            ValueError: a v1 target has no API endpoint (AI Platform's own is gone).
        """
        parts = name.split("/")
        vertex = len(parts) == 6 and parts[2] == "locations" and parts[4] == "endpoints"
        if api_endpoint is None:
            if not vertex:
                raise ValueError(f"forwarding to {name} needs an API endpoint")
            api_endpoint = f"https://{parts[3]}-aiplatform.googleapis.com"
        return cls(f"{api_endpoint.rstrip('/')}/v1/{name}:predict", vertex=vertex)

    def body(self, instances: Sequence[bytes], fields: dict[str, Any]) -> bytes:
        """A request body from instances already encoded as JSON."""
        head = b'{"instances":[' + b",".join(instances) + b"]"
        if not fields:
            return head + b"}"
        extra = {"parameters": fields} if self.vertex else fields
        return head + b"," + dumps(extra)[1:]


class Upstream:
    """One deployed model, called with retries; safe to share between threads."""

    def __init__(
        self,
        target: Target,
        policy: Policy,
        *,
        auth: str = "auto",
        session=None,
        relay: bool = False,
    ):
        self.target = target
        self.policy = policy
        self.auth = auth
        # The client keeps the status the model answered (a 404 is a 404); a forwarding
        # function answers its own caller, for whom the upstream's failure is a 502.
        self.relay = relay
        self._session = session
        self._lock = threading.Lock()
        self.calls = 0
        # False once the upstream answered a batch with another count than it held.
        self.even = True

    def call(
        self, body: bytes, count: int, stop: threading.Event | None = None, *, exact: bool = True
    ) -> Any:
        """Sends one batch of `count` instances; returns its predictions.

        Args:
            body: the request body.
            count: how many instances it holds.
            stop: once set (another batch of the request failed), no retry is made.
            exact: the answer must be a list of `count` predictions (it is joined with
                other batches'); when false, whatever `predictions` holds is returned.

        Raises:
            Uneven: `exact`, and the upstream answered another number of predictions.
            CprError: the upstream refused the batch, or kept failing past the retries.
        """
        session = self.session()
        stop = stop or threading.Event()
        started, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            with self._lock:
                self.calls += 1
            outcome = self._attempt(session, body, count, exact)
            if not isinstance(outcome, _Failure):
                return outcome
            failure = outcome
            if not failure.retry:
                raise failure.error(attempt)
            wait = min(self.policy.backoff_max, self.policy.backoff * 2 ** (attempt - 1))
            wait = max(random.uniform(0, wait), min(failure.retry_after, self.policy.backoff_max))
            spent = time.monotonic() - started
            if attempt > self.policy.retries or spent + wait > self.policy.deadline:
                raise failure.error(attempt)
            log.info("%s; retrying in %.2fs", failure.message, wait)
            if stop.wait(wait):
                raise failure.error(attempt)

    def _attempt(self, session, body: bytes, count: int, exact: bool) -> Any:
        """One call: the predictions, or what went wrong and whether to try again."""
        import requests

        url = self.target.shown
        try:
            answer = session.post(
                self.target.url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=(min(10.0, self.policy.timeout), self.policy.timeout),
            )
        except requests.ConnectTimeout:
            return _Failure(UpstreamUnavailable, f"{url} could not be reached in time", True)
        except requests.ReadTimeout:
            message = f"{url} did not answer within {self.policy.timeout:g}s"
            return _Failure(UpstreamTimeout, message, True)
        except requests.RequestException as exc:
            return _Failure(UpstreamUnavailable, f"{url} failed: {_reason(exc)}", True)
        if answer.status_code != 200:
            message = f"{url} answered {answer.status_code}: {_message(answer)}"
            retry = answer.status_code in RETRY_STATUSES
            kind = _error_for(answer.status_code, relay=self.relay)
            return _Failure(kind, message, retry, _retry_after(answer))
        try:
            predictions = orjson.loads(answer.content)["predictions"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _Failure(UpstreamError, f"{url} answered 200 without a predictions list", False)
        if exact and (not isinstance(predictions, list) or len(predictions) != count):
            got = len(predictions) if isinstance(predictions, list) else "no list of"
            message = f"{url} answered {got} predictions for {count} instances"
            return _Failure(Uneven, message, False)
        return predictions

    def session(self):
        """The HTTP session, made on first use with the credentials `auth` asks for."""
        with self._lock:
            if self._session is None:
                self._session = _session(self.auth, self.target.url, self.policy.concurrency)
            return self._session

    def get(self, url: str) -> dict:
        """GETs a resource next to the target (model metadata), without retries.

        Raises:
            CprError: the upstream failed or answered an error.
        """
        import requests

        try:
            answer = self.session().get(url, timeout=self.policy.timeout)
        except requests.RequestException as exc:
            raise UpstreamUnavailable(f"{url} failed: {_reason(exc)}") from exc
        if answer.status_code != 200:
            raise _error_for(answer.status_code, relay=self.relay)(
                f"{url} answered {answer.status_code}: {_message(answer)}"
            )
        return answer.json()


def predict(
    upstream: Upstream,
    instances: Sequence[Any],
    fields: dict[str, Any],
    *,
    progress: Callable[[int], None] | None = None,
    joined: bool = True,
) -> Any:
    """Predicts `instances` in batches sent concurrently; the predictions keep their order.

    Args:
        upstream: the deployed model.
        instances: the instances (bytes leaves are sent as `{"b64": ...}`).
        fields: the other request fields (v1: top level; Vertex AI: `parameters`).
        progress: called with the number of instances of each batch that completes.
        joined: the answer must be one prediction per instance (the client's lines).
            When false (the function's forward mode, which answers as AI Platform
            did), a request that fits one batch gets whatever the upstream answered;
            one whose batches are answered with other counts than they held is sent
            again whole, and from then on (`upstream.even` false) every request is.

    Raises:
        Uneven: `joined`, and a batch was answered with another number of predictions.
        CprError: a batch failed for good; the message names its instance range.
            No partial answer is ever returned.
    """
    batches = split(instances, upstream.policy)
    if not joined and (len(batches) == 1 or not upstream.even):
        return _whole(upstream, batches, fields, progress)
    if len(batches) == 1:
        return _one(upstream, batches[0], fields, len(instances), progress, threading.Event())
    try:
        parts = in_order(upstream, batches, fields, total=len(instances), progress=progress)
        return [p for part in parts for p in part]
    except Uneven as exc:
        if joined:
            raise
        upstream.even = False
        log.warning(
            "%s: the upstream does not answer one prediction per instance, so its answers "
            "to batches cannot be joined; this request and every later one go whole",
            exc,
        )
        return _whole(upstream, batches, fields, progress)


def in_order(
    upstream: Upstream,
    batches: Iterable[Batch],
    fields: dict[str, Any],
    *,
    total: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[list]:
    """Each batch's predictions, in the batches' order, sent `concurrency` at a time.

    Batches are taken from `batches` only as calls free up (at most `concurrency` in
    flight and as many answered or waiting behind an earlier one), so however many
    instances a file holds, only those batches are in memory. Once a batch fails for
    good, nothing more is taken from `batches`, the batches in flight make no further
    attempts, and the failure is raised as soon as it is seen: batches before it that
    were still in flight are not yielded.

    Raises:
        CprError: a batch failed for good; the message names its instance range (of
            `total` when given).
    """
    concurrency = upstream.policy.concurrency
    stop = threading.Event()  # set once a batch has failed for good, or at the end

    def settled(future: concurrent.futures.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            stop.set()  # the other batches make no further attempts

    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=concurrency, thread_name_prefix="cpr-forward"
    )
    waiting: collections.deque[concurrent.futures.Future] = collections.deque()
    try:
        for batch in batches:
            if stop.is_set():
                break  # a batch failed: nothing more is read or sent
            future = pool.submit(_one, upstream, batch, fields, total, progress, stop)
            future.add_done_callback(settled)
            waiting.append(future)
            while len(waiting) >= 2 * concurrency or (waiting and waiting[0].done()):
                yield _first(waiting)
        while waiting:
            yield _first(waiting)
    finally:
        stop.set()  # batches still in flight, if any, make no further attempts
        pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(batches, "close", None)
        if close is not None:  # a generator reading a file closes it now
            close()


def _first(waiting: collections.deque) -> list:
    """The first batch's predictions once it is answered; raises as soon as any batch
    has failed for good, without waiting for those before it."""
    while not waiting[0].done():
        for future in waiting:
            if future.done() and future.exception() is not None:
                future.result()
        pending = [f for f in waiting if not f.done()]
        concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
    return waiting.popleft().result()


def _whole(upstream: Upstream, batches: Sequence[Batch], fields, progress) -> Any:
    """What the upstream answers as `predictions` to every instance sent in one call."""
    batch = Batch(0, [instance for batch in batches for instance in batch.encoded])
    total = len(batch.encoded)
    return _one(upstream, batch, fields, total, progress, threading.Event(), exact=False)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Consecutive instances, `start` being the first one's index, already encoded."""

    start: int
    encoded: list[bytes]


def split(instances: Sequence[Any], policy: Policy) -> list[Batch]:
    """Cuts instances into batches of at most `batch_size` and `max_batch_bytes`.

    An instance larger than `max_batch_bytes` on its own goes alone; the upstream decides.
    """
    return list(batched(map(dumps, instances), policy))


def batched(encoded: Iterable[bytes], policy: Policy) -> Iterator[Batch]:
    """`split` for instances already encoded as JSON, taken from `encoded` as needed; a
    full batch is given as soon as it is full, not when the next instance comes."""
    current: list[bytes] = []
    size, start = 0, 0
    for index, instance in enumerate(encoded):
        if current and size + len(instance) + 1 > policy.max_batch_bytes:
            yield Batch(start, current)
            current, size, start = [], 0, index
        current.append(instance)
        size += len(instance) + 1
        if len(current) == policy.batch_size:
            yield Batch(start, current)
            current, size, start = [], 0, index + 1
    if current:
        yield Batch(start, current)


def _one(
    upstream: Upstream, batch: Batch, fields, total: int | None, progress, stop, exact=True
) -> Any:
    count = len(batch.encoded)
    try:
        body = upstream.target.body(batch.encoded, fields)
        predictions = upstream.call(body, count, stop, exact=exact)
    except CprError as exc:
        last = batch.start + count - 1
        of = f" of {total}" if total is not None else ""
        message = f"instances {batch.start}-{last}{of}: {exc}"
        if isinstance(exc, Relayed):
            raise Relayed(message, exc.status_code) from exc
        raise type(exc)(message) from exc
    if progress is not None:
        progress(count)
    return predictions


class Uneven(UpstreamError):
    """The upstream answered another number of predictions than the instances it was sent."""


@dataclasses.dataclass(frozen=True)
class _Failure:
    kind: Callable[[str], CprError]
    message: str
    retry: bool
    retry_after: float = 0.0

    def error(self, attempts: int) -> CprError:
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        return self.kind(self.message + tries)


def _error_for(status: int, *, relay: bool = False) -> Callable[[str], CprError]:
    if relay:
        return functools.partial(Relayed, status_code=status)
    if status in (400, 413):
        return BadRequest  # the instances themselves were refused: the caller's to fix
    if status in (429, 503):
        return UpstreamUnavailable
    if status == 504:
        return UpstreamTimeout
    return UpstreamError


def _message(answer) -> str:
    """The upstream's own error message, from either error shape, or its text."""
    try:
        error = answer.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        error = error.get("message")
    text = str(error) if error else answer.text.strip() or answer.reason or "no message"
    return text if len(text) <= 500 else text[:500] + "..."


def _retry_after(answer) -> float:
    try:
        return max(0.0, float(answer.headers.get("Retry-After", "")))
    except ValueError:
        return 0.0


def _reason(exc: Exception) -> str:
    reason = exc
    while reason.__context__ is not None and not str(reason):
        reason = reason.__context__
    text = str(reason.args[0] if reason.args else reason)
    return f"{type(exc).__name__}: {text[:200]}"


def auth_mode(url: str, auth: str) -> str:
    """The credentials `auto` picks: none for plain http, an access token for Google APIs,
    an ID token for other https services (Cloud Functions, Cloud Run)."""
    if auth != "auto":
        return auth
    if url.startswith("http://"):
        return "none"
    host = url.split("/")[2].split(":")[0]
    return "access-token" if host.endswith(".googleapis.com") else "id-token"


def _session(auth: str, url: str, pool: int):
    import requests

    mode = auth_mode(url, auth)
    if mode == "none":
        session = requests.Session()
    else:
        import google.auth
        import google.auth.exceptions
        from google.auth.transport.requests import AuthorizedSession, Request

        try:
            if mode == "id-token":
                from google.oauth2 import id_token

                audience = "/".join(url.split("/")[:3])
                credentials = id_token.fetch_id_token_credentials(audience, request=Request())
            else:
                scopes = ["https://www.googleapis.com/auth/cloud-platform"]
                credentials, _ = google.auth.default(scopes=scopes)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise UpstreamError(
                f"forwarding to {url} needs Google credentials ({mode}) and none were usable: "
                f"{exc}; on Cloud Functions give the function a service account, locally run "
                "`gcloud auth application-default login`, or set the auth to none for a "
                "server that needs no credentials"
            ) from exc
        session = AuthorizedSession(credentials)
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(pool, 1))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Forwarder:
    """A version that is a deployed model elsewhere: the registry's handle for it."""

    memory = None

    def __init__(self, spec):
        policy = Policy(
            batch_size=spec.batch_size,
            concurrency=spec.concurrency,
            timeout=spec.timeout,
            retries=spec.retries,
        )
        target = Target.named(spec.forward_to, spec.api_endpoint)
        self.upstream = Upstream(target, policy, auth=spec.auth)
        self.last_error: str | None = None
        self.shims = Shims(spec.model, spec.name, spec.shims)

    @property
    def loaded(self) -> bool:
        return True

    def respond(self, payload: dict[str, Any], *, vertex: bool = False) -> dict[str, Any]:
        """The upstream's predictions, in order, or an error naming the failed instances."""
        from .. import protocol

        instances, kwargs = protocol.instances_of(payload, vertex=vertex)
        try:
            predictions = predict(self.upstream, instances, kwargs, joined=False)
        except CprError as exc:
            self.last_error = str(exc)
            raise
        self.last_error = None
        if not self.upstream.even:
            self.shims.note(
                PREDICTION_COUNT,
                "the upstream answered a batch with another number of predictions than it "
                "held instances: every request is forwarded whole, unsplit",
            )
        return {"predictions": predictions}

    def schemas(self) -> None:
        """The upstream's schemas are not known here."""

    def unload(self) -> None:
        """Nothing is held in memory."""

    def status(self) -> dict[str, Any]:
        return {
            "loaded": True,
            "url": self.upstream.target.shown,
            "auth": auth_mode(self.upstream.target.url, self.upstream.auth),
            "upstreamCalls": self.upstream.calls,
            "lastError": self.last_error,
            "compatibility": self.shims.listed(),
        }
