"""The resource bodies AI Platform v1 and Vertex AI clients read: models, versions, endpoints."""

from __future__ import annotations

import platform
from typing import Any

from ..catalog import ModelSpec, VersionSpec

# AI Platform v1's Framework enum, plus MLflow, which it never had.
_FRAMEWORKS = {
    "scikit-learn": "SCIKIT_LEARN",
    "xgboost": "XGBOOST",
    "tensorflow": "TENSORFLOW",
    "mlflow": "MLFLOW",
}


def version(
    project: str, model: ModelSpec, spec: VersionSpec, state: tuple[str, str | None]
) -> dict[str, Any]:
    """A v1 Version resource."""
    body: dict[str, Any] = {
        "name": f"projects/{project}/models/{model.name}/versions/{spec.name}",
        "isDefault": spec.name == model.default_version,
        "state": state[0],
        "pythonVersion": ".".join(platform.python_version_tuple()[:2]),
    }
    if state[1]:
        body["errorMessage"] = state[1]
    if spec.description:
        body["description"] = spec.description
    if spec.forward_to:
        body["forwardTo"] = spec.forward_to
        return body
    body["deploymentUri"] = spec.origin
    if spec.package_uris:
        body["packageUris"] = list(spec.package_uris)
    if spec.prediction_class:
        body["predictionClass"] = spec.prediction_class
    if spec.framework:
        body["framework"] = _FRAMEWORKS[spec.framework]
    return body


def model(project: str, model: ModelSpec, state_of) -> dict[str, Any]:
    """A v1 Model resource, its default version in full."""
    default = model.version()
    body: dict[str, Any] = {
        "name": f"projects/{project}/models/{model.name}",
        "defaultVersion": version(project, model, default, state_of(default)),
    }
    if model.description:
        body["description"] = model.description
    return body


def endpoint(project: str, location: str, model: ModelSpec) -> dict[str, Any]:
    """A Vertex AI Endpoint resource: the model's versions as deployed models, all traffic
    to the default one."""
    prefix = f"projects/{project}/locations/{location}"
    deployed = [
        {
            "id": spec.name,
            "model": f"{prefix}/models/{model.name}",
            "modelVersionId": spec.name,
            "displayName": f"{model.name} {spec.name}",
        }
        for spec in model.versions
    ]
    body: dict[str, Any] = {
        "name": f"{prefix}/endpoints/{model.name}",
        "displayName": model.name,
        "deployedModels": deployed,
        "trafficSplit": {model.default_version: 100},
    }
    if model.description:
        body["description"] = model.description
    return body


def prediction(project: str, location: str, model: ModelSpec, spec: VersionSpec) -> dict[str, Any]:
    """The fields a Vertex AI predict response carries besides `predictions`."""
    return {
        "deployedModelId": spec.name,
        "model": f"projects/{project}/locations/{location}/models/{model.name}",
        "modelDisplayName": model.name,
        "modelVersionId": spec.name,
    }
