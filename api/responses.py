"""JSON responses written with orjson, the one way every route answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from flask import Response


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Return a JSON response of the body with the given status and headers."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        headers=dict(headers or {}),
        mimetype="application/json",
    )
