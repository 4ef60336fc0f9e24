"""Publishing route: an admin uploads a model version, which a worker checks and publishes as a job."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import redis
from flask import Blueprint, Response, request

from api.auth import current_owner, require_admin
from api.intake import accept_publish
from api.responses import json_response
from api.services import Services, services
from api.uploads import read_upload
from api.views import job_urls, job_view
from shared.errors import Conflict, InvalidInput, MaybeAccepted, NotFound, UnsupportedMediaType
from shared.publishing import PublishMetadata, release_lock, take_lock
from shared.registry import NAME_RE, UPLOADS
from shared.store import is_job_id, new_job_id

bp = Blueprint("publishing", __name__)
log = logging.getLogger(__name__)
# A lock whose job has no record this long after the job's id was made was left by an API process
# that died while storing the upload (which takes far less).
UNWRITTEN_JOB_S = 15 * 60


def _refuse_published(svc: Services, name: str, version: str) -> None:
    """Raise Conflict when the model already has this version."""
    try:
        svc.registry.get(name, version)
    except NotFound:
        return
    raise Conflict(
        f"Model {name} already has version {version}: publish under a new version number.",
        [{"field": "metadata.version", "reason": f"{version} is published"}],
    )


def _stale(svc: Services, holder: str) -> bool:
    """Tell whether the job holding a publishing lock will never let go of it."""
    record = svc.store.get(holder)
    if record is not None:
        return record.terminal
    # No record: its API process died between the lock and the record, or the record expired.
    created = int(holder[:14], 16) / 1e6 if is_job_id(holder) else 0.0
    return time.time() - created > UNWRITTEN_JOB_S


@bp.post("/v1/models/<name>/versions")
def publish_version(name: str) -> Response:
    """Take an upload of a model version and queue the job that checks and publishes it."""
    require_admin()
    svc = services()
    if not NAME_RE.match(name) or name == UPLOADS:
        raise InvalidInput(
            "A model name is 1 to 64 lowercase letters, digits, '-' or '_', starting with a letter or digit "
            f"(and not {UPLOADS!r}).",
            [{"field": "name", "reason": f"does not match {NAME_RE.pattern}, or is reserved"}],
        )
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("Send the upload as multipart/form-data with parts artifact and metadata.")
    job_id = new_job_id()

    def check(metadata: PublishMetadata) -> None:
        _refuse_published(svc, name, metadata.version)

    with tempfile.TemporaryDirectory(prefix="upload-") as folder:
        upload = read_upload(request, svc.settings.max_upload_bytes, Path(folder), check)
        version = upload.metadata.version
        client = svc.store.client
        # Held until the job ends (the worker lets go), or for as long as a job may live.
        if not take_lock(client, name, version, job_id, svc.settings.max_job_age_s, lambda h: _stale(svc, h)):
            raise Conflict(
                f"Version {version} of {name} is being published by another upload: wait for it to end.",
                [{"field": "metadata.version", "reason": "being published"}],
            )
        try:
            _refuse_published(svc, name, version)  # it may have been published while this one arrived
            # On the event loop: an S3 client's pooled connections belong to it (no thread may borrow them).
            svc.registry.put_upload(job_id, upload.files)
            accepted = accept_publish(svc, current_owner(), name, version, job_id)
        except MaybeAccepted:
            raise  # the job may exist and will need its upload and its lock
        except BaseException:
            _let_go(svc, name, version, job_id)
            raise
    headers = {"Location": job_urls(job_id)["get"]}
    return json_response(job_view(accepted.record), 202, headers)


def _let_go(svc: Services, name: str, version: str, job_id: str) -> None:
    """Drop a refused upload and its lock, leaving the refusal to be answered whatever fails here."""
    try:
        svc.registry.drop_upload(job_id)
    except Exception:  # a refused upload left in storage is harmless; the refusal is what matters
        log.warning("could not drop the upload of refused publish job %s", job_id)
    try:
        release_lock(svc.store.client, name, version, job_id)
    except redis.RedisError:  # it lapses after the longest a job may live
        log.warning("could not release the publishing lock of %s %s", name, version)
