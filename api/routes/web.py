"""The web page at `/`: static files (HTML, JavaScript modules, CSS) that talk only to the public /v1 API."""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, Response, send_from_directory
from werkzeug.exceptions import NotFound

bp = Blueprint("web", __name__)

APP = Path(__file__).resolve().parent.parent / "static" / "app"
_FILE = re.compile(r"^[a-z][a-z0-9-]*\.(?:js|css)$")
# The page runs only its own files and talks only to the origin that served it.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _guarded(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/")
def page() -> Response:
    """Return the web app's page."""
    return _guarded(send_from_directory(APP, "index.html", mimetype="text/html", max_age=0))


@bp.get("/app/<name>")
def page_file(name: str) -> Response:
    """Return one of the web app's scripts or style sheets."""
    if not _FILE.match(name):
        raise NotFound()
    return _guarded(send_from_directory(APP, name, max_age=60))
