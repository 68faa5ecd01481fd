"""Which action a request path names: our own routes, AI Platform v1's and Vertex AI's.

Paths are matched on their end, so a Cloud Functions URL prefix does not matter.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from ..errors import NotFound, echo

_V1 = r"(?:^|/)v1/projects/(?P<project>[^/]+)"
_MODEL = _V1 + r"/models/(?P<model>[^/:]+)"
_ENDPOINT = _V1 + r"/locations/(?P<location>[^/]+)/endpoints/(?P<model>[^/:]+)"

_TABLE = [
    (_MODEL + r"/versions/(?P<version>[^/:]+)/openapi\.json", {"GET": "openapi"}),
    (_MODEL + r"/openapi\.json", {"GET": "openapi"}),
    (_ENDPOINT + r":predict", {"POST": "vertex_predict"}),
    (_ENDPOINT + r":rawPredict", {"POST": "predict"}),
    (_ENDPOINT, {"GET": "get_endpoint"}),
    (_MODEL + r"/versions/(?P<version>[^/:]+):predict", {"POST": "predict"}),
    (_MODEL + r":predict", {"POST": "predict"}),
    (_MODEL + r"/versions/(?P<version>[^/:]+)", {"GET": "get_version"}),
    (_MODEL + r"/versions", {"GET": "list_versions"}),
    (_MODEL, {"GET": "get_model"}),
    (_V1 + r"/models", {"GET": "list_models"}),
    (r"^", {"GET": "status", "POST": "predict"}),
    (r"(?:^|/)predict", {"POST": "predict"}),
    (r"(?:^|/)health", {"GET": "health"}),
    (r"(?:^|/)openapi\.json", {"GET": "openapi"}),
]
_COMPILED = [(re.compile(pattern + "$"), actions) for pattern, actions in _TABLE]


@dataclasses.dataclass(frozen=True)
class Route:
    """A matched path: the action per method, and the names its segments carry."""

    path: str
    actions: dict[str, str]
    project: str | None = None
    location: str | None = None
    model: str | None = None
    version: str | None = None
    prefix: str = ""


def match(path: str) -> Route:
    """The route a path names.

    Raises:
        NotFound: no route ends the path.
    """
    # A function is called on the same few paths over and over; the patterns are tried
    # once per path. Only short paths are remembered: a path can be megabytes long.
    if len(path) <= _REMEMBERED_LENGTH:
        return _remembered(path)
    return _search(path)


def _search(path: str) -> Route:
    trimmed = path.rstrip("/")
    for pattern, actions in _COMPILED:
        found = pattern.search(trimmed)
        if found:
            prefix = trimmed[: found.start()]
            return Route(trimmed or "/", actions, prefix=prefix, **found.groupdict())
    raise NotFound(
        f"no route for {echo(path)}; expected POST / or POST /predict, GET / for status, or an "
        "AI Platform v1 or Vertex AI route such as POST /v1/projects/P/models/M:predict, or "
        "GET /openapi.json"
    )


_REMEMBERED_LENGTH = 256
_remembered = functools.lru_cache(maxsize=256)(_search)
