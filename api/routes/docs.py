"""Documentation routes: the OpenAPI document and a readable page of it."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from api.openapi import openapi_document
from api.responses import json_response

bp = Blueprint("docs", __name__)

STATIC = Path(__file__).resolve().parent.parent / "static"


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI 3.1 document of the service."""
    return json_response(openapi_document())


@bp.get("/docs")
def docs() -> Response:
    """Return the readable documentation page."""
    return send_from_directory(STATIC, "docs.html", mimetype="text/html")
