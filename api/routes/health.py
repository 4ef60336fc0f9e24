"""Operations routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import redis
from flask import Blueprint, Response
from kombu.exceptions import OperationalError

from api.responses import json_response
from api.services import services
from shared.errors import Unavailable

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Answer 200 while the process serves."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Answer 200 when Redis answers and a worker consumes the jobs' queue, else 503 with the reason."""
    svc = services()
    try:
        svc.store.client.ping()
    except redis.RedisError as exc:
        return json_response(Unavailable(f"Redis does not answer: {exc}.").body(), 503)
    # Redis may answer a ping yet refuse the probe's writes (out of memory), or drop meanwhile.
    try:
        workers = svc.workers.count()
    except (redis.RedisError, OperationalError, OSError) as exc:
        reason = f"Could not ask the workers through Redis: {str(exc).rstrip('.')}."
        return json_response(Unavailable(reason).body(), 503)
    if workers == 0:
        return json_response(Unavailable(f"No worker consumes queue {svc.workers.queue!r}.").body(), 503)
    return json_response({"status": "ready", "workers": workers})


@bp.get("/metrics")
def metrics() -> Response:
    """Return the Prometheus metrics in the text exposition format."""
    return Response(services().metrics.exposition(), mimetype="text/plain; version=0.0.4")
