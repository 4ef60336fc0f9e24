"""Routing routes: read and set a model's traffic weights and shadow, read the shadow's agreement, retire."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, request
from pydantic import ValidationError

from api.auth import current_owner, require_admin
from api.bodies import request_body
from api.responses import json_response
from api.services import Services, services
from api.validation import MAX_DETAILS, parse_json
from api.views import rfc3339
from shared.errors import Conflict, InvalidInput, UnsupportedMediaType
from shared.registry import bump_generation
from shared.routing import Routing, RoutingChange, comparisons, model_lock, read_routing, write_routing

bp = Blueprint("routing", __name__)

# A routing names a few versions: a body past this is not one.
MAX_ROUTING_BYTES = 64 * 1024


def routing_view(svc: Services, name: str, routing: Routing | None) -> dict[str, Any]:
    """Return the routing of the contract: the stored one, or all traffic to the default when none is."""
    if routing is None:
        default = svc.registry.default_version(name)
        return {"routes": {default: 100}, "shadow": None, "updated_at": None, "updated_by": None}
    return routing.model_dump(mode="json")


def _parse_change(raw: bytes) -> RoutingChange:
    try:
        return RoutingChange.model_validate(parse_json(raw))
    except ValidationError as exc:
        details = [
            # A validator's ValueError reads "Value error, <its words>": its words are the reason.
            {
                "field": ".".join(str(p) for p in err["loc"]) or None,
                "reason": err["msg"].removeprefix("Value error, "),
            }
            for err in exc.errors()[:MAX_DETAILS]
        ]
        raise InvalidInput(
            "The routing is not valid: integer weights by version summing to 100, and an optional shadow.",
            details,
        ) from None


def _refuse_unservable(svc: Services, name: str, change: RoutingChange) -> None:
    """Raise InvalidInput naming each version of the change that is not published and complete."""
    known = set(svc.registry.versions(name))
    named = [("routes." + v, v) for v in change.routes]
    if change.shadow is not None:
        named.append(("shadow.version", change.shadow.version))
    details = [
        {"field": field, "reason": f"{name} has no published version {version}"}
        for field, version in named
        if version not in known
    ]
    if details:
        listed = ", ".join(svc.registry.versions(name))
        raise InvalidInput(
            f"The routing names versions that cannot serve: publish them first (published: {listed}).",
            details,
        )


@bp.get("/v1/models/<name>/routing")
def get_routing(name: str) -> Response:
    """Return the model's routing: each version's weight and the shadow version."""
    svc = services()
    svc.registry.default_version(name)  # unknown_model before anything is read
    return json_response(routing_view(svc, name, read_routing(svc.store.client, name)))


@bp.put("/v1/models/<name>/routing")
def put_routing(name: str) -> Response:
    """Set the model's routing (admin); every API process follows it within a second."""
    require_admin()
    svc = services()
    svc.registry.default_version(name)
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Send the routing as application/json.")
    change = _parse_change(request_body(request, MAX_ROUTING_BYTES).read())
    client = svc.store.client
    with model_lock(client, name):
        svc.registry.refresh()  # a version published through another process is servable now
        _refuse_unservable(svc, name, change)
        previous = read_routing(client, name)
        routing = Routing(
            **change.model_dump(), updated_at=rfc3339(time.time()) or "", updated_by=current_owner()
        )
        write_routing(client, name, routing, previous)
    svc.routing.forget(name)
    return json_response(routing_view(svc, name, routing))


@bp.get("/v1/models/<name>/shadow")
def get_shadow(name: str) -> Response:
    """Return how the shadow version's outputs compare with the served ones."""
    svc = services()
    svc.registry.default_version(name)
    routing = read_routing(svc.store.client, name)
    if routing is None or routing.shadow is None:
        return json_response({"version": None, "compared": 0, "agreement": None, "mean_abs_diff": None})
    version = routing.shadow.version
    compared, agreed, diff = comparisons(svc.store.client, name, version)
    return json_response(
        {
            "version": version,
            "compared": compared,
            "agreement": agreed / compared if compared else None,
            "mean_abs_diff": diff / compared if compared else None,
        }
    )


@bp.delete("/v1/models/<name>/versions/<version>")
def retire_version(name: str, version: str) -> Response:
    """Retire a version no routing sends traffic to (admin); workers then free its memory."""
    require_admin()
    svc = services()
    client = svc.store.client
    with model_lock(client, name):
        svc.registry.refresh()
        svc.registry.get(name, version)  # unknown_model or unknown_version
        routing = read_routing(client, name)
        if routing is not None and routing.routed(version):
            raise Conflict(
                f"Version {version} of {name} is routed: PUT a routing without it (weight 0, not the "
                "shadow) first, then retire it.",
                [{"field": "version", "reason": "routed"}],
            )
        default = routing.heaviest() if routing is not None else svc.registry.default_version(name)
        if version == default:
            raise Conflict(
                f"Version {version} is the default of {name}: route all traffic to another version first.",
                [{"field": "version", "reason": "default version"}],
            )
        svc.registry.retire(name, version)
        bump_generation(client)
        if routing is not None and version in routing.routes:  # a weight of 0 names it still
            kept = {v: w for v, w in routing.routes.items() if v != version}
            write_routing(client, name, routing.model_copy(update={"routes": kept}), routing)
    svc.routing.forget(name)
    return Response(status=204)
