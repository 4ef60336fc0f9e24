"""Documentation routes: the OpenAPI document, and Swagger UI drawing it from the files a package ships."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import orjson
from flask import Blueprint, Response, current_app, send_from_directory
from werkzeug.exceptions import NotFound

from api.openapi import openapi_document
from api.services import services

bp = Blueprint("docs", __name__)

STATIC = Path(__file__).resolve().parent.parent / "static"
RENDERER_PACKAGE = "swagger_ui_bundle"
# The page's own files and the renderer's it loads; nothing else is served from either folder.
PAGE_FILES = frozenset({"docs.js", "docs.css"})
RENDERER_FILES = frozenset(
    {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "favicon-16x16.png"}
)
_DOCUMENT = "infer.openapi"


@functools.cache
def renderer_folder() -> Path:
    """Return the folder of Swagger UI's files in the swagger-ui-bundle-v2 package, without importing it."""
    spec = importlib.util.find_spec(RENDERER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {RENDERER_PACKAGE} package (requirements/api.txt) is not installed")
    folders = sorted(Path(spec.submodule_search_locations[0]).glob("vendor/swagger-ui-*"))
    if len(folders) != 1:
        raise RuntimeError(f"expected one Swagger UI folder in {RENDERER_PACKAGE}, found {len(folders)}")
    return folders[0]


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI 3.1 document of the service, made once per process from its settings."""
    document: bytes | None = current_app.extensions.get(_DOCUMENT)
    if document is None:
        document = orjson.dumps(openapi_document(services().settings))
        current_app.extensions[_DOCUMENT] = document
    return Response(document, mimetype="application/json")


@bp.get("/docs")
def docs() -> Response:
    """Return the documentation page, which draws /openapi.json with Swagger UI."""
    return send_from_directory(STATIC, "docs.html", mimetype="text/html")


@bp.get("/docs/<name>")
def docs_file(name: str) -> Response:
    """Return one file of the documentation page: its own script and style, or the renderer's."""
    if name in PAGE_FILES:
        return send_from_directory(STATIC, name, max_age=300)
    if name in RENDERER_FILES:
        return send_from_directory(renderer_folder(), name, max_age=86_400)
    raise NotFound()
