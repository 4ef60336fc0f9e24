"""Job routes: submit, poll (with long-poll), cancel, list and stream outputs."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import orjson
import redis
from flask import Blueprint, Response, request

from api.auth import current_owner
from api.bodies import request_body
from api.intake import Accepted, accept_csv, accept_json
from api.responses import json_response
from api.services import Services, services
from api.views import job_urls, job_view
from api.waiter import Watch
from api.webhooks import from_headers as webhook_headers
from shared.errors import Conflict, InvalidInput, UnknownJob, UnsupportedMediaType
from shared.store import CANCELED, QUEUED, RUNNING, STATUSES, SUCCEEDED, JobRecord, is_job_id, new_job_id

bp = Blueprint("jobs", __name__)

_WAIT_RE = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)")
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 500


def _refuse_unknown_query(*known: str) -> None:
    """Raise InvalidInput naming each query parameter the route does not take."""
    unknown = sorted(set(request.args) - set(known))
    if unknown:
        details = [{"field": name[:64], "reason": "not a parameter of this route"} for name in unknown[:20]]
        raise InvalidInput("The query has parameters this route does not take.", details)


def _requested_wait(svc: Services) -> float | None:
    """Return the seconds the client asked to wait, from ?wait= or Prefer: wait=, capped."""
    raw = request.args.get("wait")
    if raw is not None:
        try:
            wanted = float(raw)
        except ValueError:
            raise InvalidInput(
                "wait must be a number of seconds.", [{"field": "wait", "reason": "not a number"}]
            ) from None
        if not 0 <= wanted < float("inf"):
            raise InvalidInput(
                "wait must be 0 or more seconds.", [{"field": "wait", "reason": "out of range"}]
            )
        return min(wanted, svc.settings.max_wait_s)
    match = _WAIT_RE.search(request.headers.get("Prefer", ""))
    return min(float(match.group(1)), svc.settings.max_wait_s) if match else None


def _owned(svc: Services, job_id: str) -> JobRecord:
    record = svc.store.get(job_id)
    if record is None or record.owner != current_owner():
        raise UnknownJob("No job with this id exists for this API key.")
    return record


def _owned_view(svc: Services, job_id: str, announced: str | None = None) -> tuple[JobRecord, dict[str, Any]]:
    record, outputs = svc.store.get_with_outputs(job_id, svc.settings.inline_limit, announced)
    if record is None or record.owner != current_owner():
        raise UnknownJob("No job with this id exists for this API key.")
    return record, job_view(record, outputs)


def _respond(
    job_id: str, record: JobRecord, view: dict[str, Any], wait: float | None, accepted_status: int
) -> Response:
    headers = {"Preference-Applied": f"wait={wait:g}"} if wait is not None else {}
    # A submit answers 200 only when its requested wait saw the job end; otherwise 202, accepted.
    status = 200 if record.terminal and wait is not None else accepted_status
    if accepted_status == 202:
        headers["Location"] = job_urls(job_id)["get"]
    return json_response(view, status, headers)


def _watching(svc: Services, job_id: str, wait: float | None) -> AbstractContextManager[Watch | None]:
    """Register interest in the job's end when the request will wait for it, before anything is read."""
    return svc.waiter.watch(job_id) if wait else nullcontext()


def _poll(svc: Services, job_id: str, wait: float | None, accepted_status: int) -> Response:
    with _watching(svc, job_id, wait) as watch:
        record, view = _owned_view(svc, job_id)
        if watch is not None and wait and not record.terminal:
            watch.wait(wait, lambda: svc.store.ended(job_id))
            record, view = _owned_view(svc, job_id, watch.ending)
    return _respond(job_id, record, view, wait, accepted_status)


@bp.post("/v1/models/<name>/jobs")
def submit(name: str) -> Response:
    """Validate a job's inputs against the model's schema and queue it."""
    svc = services()
    svc.registry.default_version(name)  # raises unknown_model before the body is read
    if request.mimetype not in ("application/json", "text/csv"):
        raise UnsupportedMediaType("Send the inputs as application/json or text/csv.")
    wait = _requested_wait(svc)
    key = request.headers.get("Idempotency-Key")
    fresh = new_job_id()
    csv_body = request.mimetype == "text/csv"
    hook = webhook_headers(request.headers, csv_body)
    limits = svc.settings
    # Read through the body limit (a bulk CSV's own), chunked or not, inflated when gzip-compressed.
    body = request_body(request, limits.max_bulk_body_bytes if csv_body else limits.max_body_bytes)
    with _watching(svc, fresh, wait) as watch:
        if csv_body:
            # A CSV body names no version: the model's routing draws the one that serves it.
            manifest = svc.registry.get(name, svc.routing.choose(name))
            accepted = accept_csv(svc, current_owner(), manifest, fresh, body, key, hook)
        else:
            accepted = accept_json(svc, current_owner(), name, fresh, body, key)
        if accepted.created:
            return _answer_accepted(svc, accepted, watch, wait)
    return _poll(svc, accepted.record.id, wait, 202)  # a retry found an earlier job: watch that one


def _answer_accepted(svc: Services, accepted: Accepted, watch: Watch | None, wait: float | None) -> Response:
    """Answer 202 with the accepted job, or 200 once a requested wait saw it finish.

    The job is accepted whatever happens next, so a store that stops answering now still gets
    the job as it was accepted, never an error that would say nothing was.
    """
    record = accepted.record
    view = job_view(record)
    if watch is not None and wait:
        try:
            watch.wait(wait, lambda: svc.store.ended(record.id))
            record, view = _owned_view(svc, record.id, watch.ending)
        except redis.RedisError:
            pass
    return _respond(record.id, record, view, wait, 202)


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    """Return a job, holding the answer while it runs when asked to wait."""
    svc = services()
    _refuse_unknown_query("wait")
    return _poll(svc, job_id, _requested_wait(svc), 200)


@bp.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    """Cancel a queued or running job."""
    svc = services()
    record = _owned(svc, job_id)
    outcome = svc.store.end(job_id, record.model, CANCELED, "canceled", "The job was canceled by its owner.")
    if outcome != "ended":
        raise Conflict(
            f"The job has already ended as {record.status if outcome == 'missing' else outcome}.",
            [{"field": "status", "reason": outcome}],
        )
    return json_response(_owned_view(svc, job_id)[1])


@bp.get("/v1/jobs")
def list_jobs() -> Response:
    """List this key's jobs, newest first, filtered by status and model."""
    svc = services()
    _refuse_unknown_query("status", "model", "limit", "cursor")
    status = request.args.get("status")
    model = request.args.get("model")
    cursor = request.args.get("cursor")
    details = []
    if status is not None and status not in STATUSES:
        details.append({"field": "status", "reason": f"one of {', '.join(STATUSES)}"})
    if cursor is not None and not is_job_id(cursor):
        details.append({"field": "cursor", "reason": "not a cursor this API returned"})
    try:
        limit = int(request.args.get("limit", DEFAULT_LIST_LIMIT))
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError
    except ValueError:
        details.append({"field": "limit", "reason": f"a whole number from 1 to {MAX_LIST_LIMIT}"})
        limit = 0
    if details:
        raise InvalidInput("The list query is not valid.", details)
    owner = current_owner()
    jobs: list[dict[str, Any]] = []
    scanned_to = cursor
    exhausted = False
    # Unfinished jobs have an index of their own, bounded by the per-key limit, so a list of queued
    # or running jobs is read to its end; other filters skip records, so pages are read until the
    # limit is met or enough was scanned, and next_cursor says where to go on.
    unfinished = status in (QUEUED, RUNNING)
    pages = svc.settings.max_open_jobs_per_key // limit + 2 if unfinished else 20
    for _ in range(pages):
        ids = svc.store.list_ids(owner, scanned_to, limit, unfinished)
        if not ids:
            exhausted = True
            break
        records = svc.store.get_many(ids)
        svc.store.forget(owner, [i for i, r in zip(ids, records, strict=True) if r is None])
        for job_id, record in zip(ids, records, strict=True):
            scanned_to = job_id
            if record is None or status not in (None, record.status) or model not in (None, record.model):
                continue
            jobs.append(job_view(record))
            if len(jobs) == limit:
                break
        if len(jobs) == limit:
            break
        if len(ids) < limit:
            exhausted = True
            break
    more = not exhausted and bool(svc.store.list_ids(owner, scanned_to, 1, unfinished))
    return json_response({"jobs": jobs, "next_cursor": scanned_to if more else None})


@bp.get("/v1/jobs/<job_id>/outputs")
def stream_outputs(job_id: str) -> Response:
    """Stream every output of a succeeded job as NDJSON or CSV, in input order."""
    svc = services()
    record = _owned(svc, job_id)
    if record.status != SUCCEEDED:
        raise Conflict(
            f"Outputs exist only once the job has succeeded; it is {record.status}.",
            [{"field": "status", "reason": record.status}],
        )
    chunks = svc.store.output_chunks(job_id, record.chunks)
    best = request.accept_mimetypes.best_match(["application/x-ndjson", "text/csv"])
    if (
        best == "text/csv"
        and request.accept_mimetypes["text/csv"] > request.accept_mimetypes["application/x-ndjson"]
    ):
        labels = svc.registry.get(record.model, record.version).labels
        return Response(_csv_lines(chunks, labels), mimetype="text/csv")
    return Response(_ndjson_lines(chunks), mimetype="application/x-ndjson")


def _ndjson_lines(chunks: Iterator[str]) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk.encode()


def _csv_lines(chunks: Iterator[str], labels: list[str] | None) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["value"] if labels is None else ["label", *(f"probability_{n}" for n in labels)])
    for chunk in chunks:
        outputs = orjson.loads("[" + chunk.rstrip("\n").replace("\n", ",") + "]") if chunk else []
        if labels is None:
            writer.writerows([o["value"]] for o in outputs)
        else:
            writer.writerows([o["label"], *(o["probabilities"][n] for n in labels)] for o in outputs)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
