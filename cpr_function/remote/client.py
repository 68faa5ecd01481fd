"""Predicting many instances against a deployed model from Python: batched, concurrent, ordered.

from cpr_function import client

predictions = client.predict(instances, url="https://REGION-PROJECT.cloudfunctions.net/fn")
predictions = client.predict(instances, model="projects/p/models/m", api_endpoint=URL)
predictions = client.predict(instances, model="projects/p/locations/l/endpoints/123")
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..protocol import dumps
from .forward import Policy, Target, Upstream, batched, in_order


def predict(
    instances: Sequence[Any],
    *,
    url: str | None = None,
    model: str | None = None,
    api_endpoint: str | None = None,
    batch_size: int = 100,
    concurrency: int = 16,
    timeout: float = 60.0,
    retries: int = 5,
    auth: str = "auto",
    progress: bool = False,
    **fields: Any,
) -> list:
    """Predicts `instances` in batches sent concurrently; the answer keeps their order.

    Args:
        instances: the instances, any JSON values (`bytes` are sent as `{"b64": ...}`).
        url: a URL that takes `{"instances": [...]}` itself, such as a function's.
        model: or a resource name: `projects/P/models/M[/versions/V]` (with
            `api_endpoint`) or `projects/P/locations/L/endpoints/E` (Vertex AI).
        api_endpoint: the base URL for `model`; Vertex AI's regional one when unset.
        batch_size: most instances per call (and at most 1.5 MB of JSON).
        concurrency: most calls in flight at once.
        timeout: seconds to wait for one call.
        retries: further attempts after a 429, 5xx, timeout or connection error.
        auth: `auto` (none for http://, an access token for googleapis.com, an ID
            token for other https services), `access-token`, `id-token` or `none`.
        progress: show a progress bar on stderr (tqdm when installed).
        **fields: other request fields, passed as keyword arguments to the model
            (for a Vertex AI endpoint, as its `parameters`).

    Returns:
        One prediction per instance, in the instances' order.

    Raises:
        cpr_function.errors.CprError: a batch failed for good; its `status_code` is the
            status the model answered (400 refused, 401 or 403 not admitted, 404 no such
            model, 5xx its own failure), or 503 unreachable, 504 timed out; the message
            names the instance range. Nothing partial is returned.
    """
    # Encoded before any is sent, so that an instance JSON cannot hold fails the call first.
    encoded = [dumps(instance) for instance in instances]
    parts = predict_json(
        encoded,
        total=len(encoded),
        url=url,
        model=model,
        api_endpoint=api_endpoint,
        batch_size=batch_size,
        concurrency=concurrency,
        timeout=timeout,
        retries=retries,
        auth=auth,
        progress=progress,
        **fields,
    )
    return [p for part in parts for p in part]


def predict_json(
    texts: Iterable[bytes],
    *,
    total: int | None = None,
    url: str | None = None,
    model: str | None = None,
    api_endpoint: str | None = None,
    batch_size: int = 100,
    concurrency: int = 16,
    timeout: float = 60.0,
    retries: int = 5,
    auth: str = "auto",
    progress: bool = False,
    **fields: Any,
) -> Iterator[list]:
    """`predict` for instances given as JSON texts (the lines of a JSON-lines file), taken
    from `texts` only as calls free up: yields each batch's predictions, in order. However
    many instances there are, only the batches in flight are held in memory.

    Args:
        texts: each instance's JSON, as bytes; sent as it is.
        total: how many there are, for the progress bar and messages (None: unknown).
        The rest: as `predict`'s.

    Raises:
        ValueError: the target is given wrongly (raised by this call, before any batch).
        cpr_function.errors.CprError: while iterating, a batch failed for good; nothing
            more is read from `texts`. Batches before it that were still in flight are
            not yielded: the range in the message is not where the output stops.
    """
    upstream = _upstream(url, model, api_endpoint, auth, batch_size, concurrency, timeout, retries)
    return _in_order(upstream, texts, total, progress, fields)


def _in_order(upstream: Upstream, texts, total, progress: bool, fields) -> Iterator[list]:
    with _progress(progress, total) as tick:
        batches = batched(texts, upstream.policy)
        yield from in_order(upstream, batches, fields, total=total, progress=tick)


def model_meta(
    model: str, *, api_endpoint: str, auth: str = "auto", timeout: float = 60.0
) -> dict[str, Any]:
    """An AI Platform v1 Model resource, with `defaultVersion` in full.

    Args:
        model: `projects/P/models/M`.
        api_endpoint: the base URL of a server speaking the v1 contract.
    """
    upstream = _upstream(None, model, api_endpoint, auth, 1, 1, timeout, 0)
    return upstream.get(f"{api_endpoint.rstrip('/')}/v1/{model}")


def default_version(model: str, *, api_endpoint: str, auth: str = "auto") -> str:
    """The name of a v1 model's default version (`projects/P/models/M/versions/V`)."""
    return model_meta(model, api_endpoint=api_endpoint, auth=auth)["defaultVersion"]["name"]


def _upstream(url, model, api_endpoint, auth, batch_size, concurrency, timeout, retries):
    if (url is None) == (model is None):
        raise ValueError("give exactly one of url= (a function URL) or model= (a resource name)")
    if model is not None and "/endpoints/" not in model and api_endpoint is None:
        raise ValueError(
            f"model {model} is an AI Platform v1 name; ml.googleapis.com was shut down, so "
            "give api_endpoint= (the base URL of a server speaking its contract)"
        )
    policy = Policy(
        batch_size=batch_size, concurrency=concurrency, timeout=timeout, retries=retries
    )
    target = Target(url) if url is not None else Target.named(model, api_endpoint)
    return Upstream(target, policy, auth=auth, relay=True)


@contextlib.contextmanager
def _progress(enabled: bool, total: int | None) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        done = [0]
        of = f"/{total}" if total is not None else ""

        def tick(count: int) -> None:
            done[0] += count
            print(f"\r{done[0]}{of} instances", end="", file=sys.stderr, flush=True)

        yield tick
        print(file=sys.stderr)
        return
    with tqdm(total=total, unit="instance", file=sys.stderr) as bar:
        yield bar.update
