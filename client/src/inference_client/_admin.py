"""What the sync and async clients share for shipping models: routing, shadow and retire calls, their answers.

Like `_core`, nothing here does I/O: the clients send these `Call`s and parse the answers here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from inference_client._core import Call


@dataclass(frozen=True)
class Shadow:
    """A version that also predicts a `sample` share (0 to 1] of routed jobs, its outputs only compared."""

    version: str
    sample: float


@dataclass(frozen=True)
class Routing:
    """A model's routing: each version's weight (summing to 100) and the shadow version, if any."""

    routes: dict[str, int]
    shadow: Shadow | None
    updated_at: str | None
    updated_by: str | None

    @property
    def default(self) -> str:
        """Return the version with the largest weight (the newest of equals): the model's default."""
        return max(self.routes, key=lambda v: (self.routes[v], _version_key(v)))


@dataclass(frozen=True)
class ShadowReport:
    """How the shadow version's outputs compare with the served ones (None figures before any)."""

    version: str | None
    compared: int
    agreement: float | None
    mean_abs_diff: float | None


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return ()


def _model_path(model: str) -> str:
    return f"/v1/models/{quote(model, safe='')}"


def get_routing(model: str) -> Call:
    """Return the call reading a model's routing."""
    return Call("GET", f"{_model_path(model)}/routing")


def put_routing(model: str, routes: Mapping[str, int], shadow: Shadow | None) -> Call:
    """Return the call replacing a model's routing (the same body sent twice sets the same routing)."""
    body: dict[str, Any] = {
        "routes": dict(routes),
        "shadow": None if shadow is None else {"version": shadow.version, "sample": shadow.sample},
    }
    content = json.dumps(body).encode()
    return Call("PUT", f"{_model_path(model)}/routing", headers={"Content-Type": "application/json"},
                content=content)  # fmt: skip


def get_shadow(model: str) -> Call:
    """Return the call reading how a model's shadow version agrees with the served one."""
    return Call("GET", f"{_model_path(model)}/shadow")


def retire(model: str, version: str) -> Call:
    """Return the call retiring a version (sent again it would answer 404: never resent)."""
    return Call("DELETE", f"{_model_path(model)}/versions/{quote(version, safe='')}", repeatable=False)


def parse_routing(body: dict[str, Any]) -> Routing:
    """Return the routing of an answer of GET or PUT /v1/models/{name}/routing."""
    shadow = body.get("shadow")
    return Routing(
        routes={str(v): int(w) for v, w in (body.get("routes") or {}).items()},
        shadow=Shadow(str(shadow["version"]), float(shadow["sample"])) if shadow else None,
        updated_at=body.get("updated_at"),
        updated_by=body.get("updated_by"),
    )


def parse_shadow(body: dict[str, Any]) -> ShadowReport:
    """Return the comparison of an answer of GET /v1/models/{name}/shadow."""
    return ShadowReport(
        version=body.get("version"),
        compared=int(body.get("compared") or 0),
        agreement=body.get("agreement"),
        mean_abs_diff=body.get("mean_abs_diff"),
    )
