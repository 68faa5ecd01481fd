"""What each route answers: predictions, the v1 and Vertex AI resources, OpenAPI, status.

Each handler takes the request, its matched route and a dict of fields for the request's
log line, and returns the body to encode; errors propagate to the app, which answers them.
"""

from __future__ import annotations

from typing import Any

from .. import protocol
from ..catalog import Catalog
from ..config import Config
from ..serving.registry import Registry
from . import resources, routes


class Handlers:
    """The actions the routes name, over the catalog and the registry of loaded versions."""

    def __init__(self, config: Config, catalog: Catalog, registry: Registry):
        self.config = config
        self.catalog = catalog
        self.registry = registry

    def predict(self, request, route: routes.Route, note: dict) -> dict[str, Any]:
        spec = self.catalog.model(route.model).version(route.version)
        note.update(model=spec.model, version=spec.name)
        payload = protocol.parse_body(self._body(request))
        note["instances"] = protocol.count(payload)
        return self.registry.respond(spec, payload)

    def vertex_predict(self, request, route: routes.Route, note: dict) -> dict[str, Any]:
        model = self.catalog.model(route.model)
        spec = model.version()
        note.update(model=spec.model, version=spec.name)
        payload = protocol.parse_body(self._body(request))
        note["instances"] = protocol.count(payload)
        body = self.registry.respond(spec, payload, vertex=True)
        if not isinstance(body, dict):
            return body
        return {**body, **resources.prediction(route.project, route.location, model, spec)}

    def _body(self, request) -> bytes:
        return protocol.read_body(
            request.stream, request.content_length, self.config.max_request_bytes
        )

    def openapi(self, request, route: routes.Route, note: dict) -> dict[str, Any]:
        from . import openapi

        model = self.catalog.model(route.model)
        spec = model.version(route.version)
        note.update(model=spec.model, version=spec.name)
        if route.project is None:
            paths = ["/predict", "/"]
        else:
            base = f"/v1/projects/{route.project}/models/{model.name}"
            paths = [f"{base}/versions/{spec.name}:predict"]
            if spec.name == model.default_version:
                paths.insert(0, f"{base}:predict")
        return openapi.document(
            title=f"model {spec.model} version {spec.name}",
            server=route.prefix,
            paths=paths,
            schemas=self.registry.schemas(spec),
            google_errors=route.project is not None,
        )

    def list_models(self, request, route: routes.Route, note: dict) -> dict[str, Any]:
        state = self.registry.state
        return {"models": [resources.model(route.project, m, state) for m in self.catalog.models]}

    def get_model(self, request, route: routes.Route, note: dict) -> dict[str, Any]:
        model = self.catalog.model(route.model)
        return resources.model(route.project, model, self.registry.state)

    def list_versions(self, request, route: routes.Route, note: dict) -> dict[str, Any]:
        model = self.catalog.model(route.model)
        state = self.registry.state
        return {
            "versions": [
                resources.version(route.project, model, v, state(v)) for v in model.versions
            ]
        }

    def get_version(self, request, route: routes.Route, note: dict) -> dict[str, Any]:
        model = self.catalog.model(route.model)
        spec = model.version(route.version)
        return resources.version(route.project, model, spec, self.registry.state(spec))

    def get_endpoint(self, request, route: routes.Route, note: dict) -> dict[str, Any]:
        model = self.catalog.model(route.model)
        return resources.endpoint(route.project, route.location, model)

    def health(self, request, route: routes.Route, note: dict) -> dict[str, Any]:
        """The body of `GET /health`: the process answers; nothing about the models."""
        return {"status": "ok"}

    def status(self, request, route: routes.Route, note: dict) -> dict[str, Any]:
        """The body of `GET /`."""
        return {"config": self.config.describe(), **self.registry.status()}
