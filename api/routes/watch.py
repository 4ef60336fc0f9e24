"""Watching routes (admin): a version's drift against its reference, and a model's prediction log."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from flask import Blueprint, Response, request
from pydantic import BaseModel, ValidationError

from api.auth import require_admin
from api.contract import DriftQuery, PredictionLogQuery
from api.drift import drift_report
from api.responses import json_response
from api.services import services
from api.validation import MAX_DETAILS
from api.views import rfc3339
from shared.drift import REFERENCE_FILE, read_window
from shared.errors import InvalidInput
from shared.prediction_log import read_entries

bp = Blueprint("watch", __name__)

Query = TypeVar("Query", bound=BaseModel)


def _query(model: type[Query]) -> Query:
    """Return the request's query parsed by its model, or raise InvalidInput naming each bad parameter."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in err["loc"]) or None, "reason": err["msg"]}
            for err in exc.errors()[:MAX_DETAILS]
        ]
        raise InvalidInput("The query is not valid for this route: see details.", details) from None


@bp.get("/v1/models/<name>/versions/<version>/drift")
def get_drift(name: str, version: str) -> Response:
    """Compare a version's records served in the window with its reference (admin)."""
    require_admin()
    svc = services()
    manifest = svc.registry.get(name, version)
    window_s = _query(DriftQuery).window_s
    raw = svc.registry.read_file(manifest, REFERENCE_FILE)
    reference = orjson.loads(raw) if raw is not None else None
    counts = read_window(svc.store.client, name, version, window_s)
    return json_response(drift_report(name, version, window_s, reference, counts))


@bp.get("/v1/models/<name>/predictions")
def list_predictions(name: str) -> Response:
    """Return a model's prediction log as NDJSON, newest first (admin)."""
    require_admin()
    svc = services()
    svc.registry.default_version(name)  # unknown_model before anything is read
    query = _query(PredictionLogQuery)
    entries = read_entries(svc.store.client, name, query.limit, query.cursor)
    lines = b"".join(orjson.dumps(_entry(entry)) + b"\n" for entry in entries)
    headers = {"Next-Cursor": entries[-1]["id"]} if len(entries) == query.limit else {}
    return Response(lines, status=200, headers=headers, mimetype="application/x-ndjson")


def _entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "at": rfc3339(entry["at"])}
