"""Webhook routes: this key's signing secret, and the deliveries of one job with their attempts."""

from __future__ import annotations

from flask import Blueprint, Response

from api.auth import current_owner
from api.responses import json_response
from api.services import services
from shared.errors import NotFound, UnknownJob
from shared.webhook_store import deliveries_of
from shared.webhooks import NOT_ENABLED, key_secret, secret_text

bp = Blueprint("webhooks", __name__)


@bp.get("/v1/webhooks/secret")
def webhook_secret() -> Response:
    """Return the secret this key's webhook deliveries are signed with."""
    secret = services().settings.webhook_secret
    if secret is None:
        raise NotFound(NOT_ENABLED)
    return json_response({"secret": secret_text(key_secret(secret.get_secret_value(), current_owner()))})


@bp.get("/v1/jobs/<job_id>/deliveries")
def job_deliveries(job_id: str) -> Response:
    """List a job's webhook deliveries, each with its attempts."""
    svc = services()
    record = svc.store.get(job_id)
    if record is None or record.owner != current_owner():
        raise UnknownJob("No job with this id exists for this API key.")
    return json_response({"deliveries": deliveries_of(svc.store.client, job_id)})
