"""A job's events stream (Server-Sent Events): its state at once, again at each change, closed after its end.

A stream costs no thread and no Redis connection while it waits: under gevent it is one greenlet
parked on an event that the process's one subscription (api/waiter.py) sets when a worker
announces a change of the job. Each event's id is `<done>-<stage>`, two counts that only grow, so
a client that comes back with `Last-Event-ID` is sent only what it has not seen.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator

import orjson
import redis
from flask import Blueprint, Response, g, request

from api.auth import current_owner
from api.services import Services, services
from api.views import job_view
from shared.errors import UnknownJob
from shared.store import QUEUED, RUNNING, JobRecord

bp = Blueprint("events", __name__)

# A comment this often keeps proxies from closing a quiet stream and finds clients that have left;
# it is also when a stream reads its job again should an announcement have been lost.
HEARTBEAT_S = 15.0
# How soon a client comes back (milliseconds) after a stream closed before its job ended.
RETRY_MS = 1000
# Where a status stands in a job's life: queued, running, then every final status.
_STAGES: dict[str, int] = {QUEUED: 0, RUNNING: 1}
_FINAL_STAGE = 2

Mark = tuple[int, int]


def _mark(record: JobRecord) -> Mark:
    """Return how far the job has come: records done and the stage of its status, neither ever going back."""
    return record.done, _STAGES.get(record.status, _FINAL_STAGE)


def _last_seen(header: str | None) -> Mark | None:
    """Return the mark of the last event the client saw, or None when it names none this API sent."""
    done, _, stage = (header or "").strip().partition("-")
    if not (done.isdigit() and stage.isdigit()):
        return None
    return int(done), int(stage)


def _newer(mark: Mark, seen: Mark | None) -> bool:
    return seen is None or mark[0] > seen[0] or mark[1] > seen[1]


def _event(record: JobRecord, mark: Mark) -> bytes:
    view = job_view(record)
    del view["outputs"]  # the outputs are read from the job or its outputs route, never streamed here
    return b"id: %d-%d\nevent: job\ndata: %s\n\n" % (mark[0], mark[1], orjson.dumps(view))


def _retry() -> bytes:
    return b"retry: %d\n\n" % RETRY_MS


def _stream(svc: Services, job_id: str, seen: Mark | None, until: float) -> Iterator[bytes]:
    """Yield the job's events until it ends, the stream's time is up, or the job store stops answering."""
    with svc.waiter.follow(job_id) as follow:  # registered before each read, so no change is missed
        while True:
            try:
                record = svc.store.get(job_id)
            except redis.RedisError:
                yield _retry()  # the client comes back with Last-Event-ID once the store answers
                return
            if record is None:
                return  # gone with its retention: nothing more will ever be said of it
            mark = _mark(record)
            if _newer(mark, seen):
                seen = mark
                yield _event(record, mark)
            if record.terminal:
                return
            left = until - time.monotonic()
            if left <= 0:
                yield _retry()
                return
            if not follow.wait(min(left, HEARTBEAT_S)):
                yield b": keep-alive\n\n"


@bp.get("/v1/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    """Stream a job's events: its state at once, then at every change of status or progress."""
    svc = services()
    owner = current_owner()
    record = svc.store.get(job_id)
    if record is None or record.owner != owner:
        raise UnknownJob("No job with this id exists for this API key.")
    seen = _last_seen(request.headers.get("Last-Event-ID"))
    if record.terminal and seen is not None and seen[1] == _FINAL_STAGE:
        # The client saw the end already; 204 tells an EventSource to stop coming back.
        return Response(status=204)
    limit = svc.settings.events_max_s
    if not record.terminal:
        svc.store.follow(job_id, limit + HEARTBEAT_S)
    stream = _stream(svc, job_id, seen, time.monotonic() + limit)
    response = Response(stream, mimetype="text/event-stream", headers={"Cache-Control": "no-store"})
    # The stream keeps its place among the key's open requests until it closes, not until this returns.
    if g.pop("holding", False):
        response.call_on_close(functools.partial(svc.open_requests.leave, owner))
    return response
