"""Model routes: what is published, and each version's schemas."""

from __future__ import annotations

from flask import Blueprint, Response

from api.responses import json_response
from api.services import services
from api.views import model_summary, model_view

bp = Blueprint("models", __name__)


@bp.get("/v1/models")
def list_models() -> Response:
    """List every published model with its default version (the heaviest routed one)."""
    svc = services()
    registry = svc.registry
    registry.refresh()
    return json_response(
        {
            "models": [
                model_summary(registry.get(n, svc.routing.default_version(n)), registry.versions(n))
                for n in registry.names()
            ]
        }
    )


@bp.get("/v1/models/<name>")
def get_model(name: str) -> Response:
    """Describe a model's default version: the heaviest routed one, else the first published."""
    svc = services()
    registry = svc.registry
    return json_response(
        model_view(registry.get(name, svc.routing.default_version(name)), registry.versions(name))
    )


@bp.get("/v1/models/<name>/versions/<version>")
def get_model_version(name: str, version: str) -> Response:
    """Describe one version of a model."""
    registry = services().registry
    return json_response(model_view(registry.get(name, version), registry.versions(name)))
