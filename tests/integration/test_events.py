"""GET /v1/jobs/{id}/events: the job at once, at each change, closed after its end, resumable, cheap."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from shared.settings import Settings
from shared.store import FinishedChunk, JobStore, connect
from tests.integration.conftest import KEY, OTHER_KEY, Api, error_of
from tools.stack import Stack, free_port, wait_until

# The jobs of this stack wait in a queue no worker consumes: the test moves them as a worker would,
# with the store's own scripts, so each change comes when the test says.
QUEUE = "events-test"
CHUNK = 2
HEADER = "sepal_length,sepal_width,petal_length,petal_width\n"
OUTPUT = {"label": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.1, "virginica": 0.0}}
STREAMS = 200


def _csv(rows: int) -> bytes:
    return (HEADER + "5.1,3.5,1.4,0.2\n" * rows).encode()


def _auth(key: str = KEY, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Yield each event of a Server-Sent Events answer as its fields, `data` parsed, as they arrive."""
    fields: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = json.loads(value) if name == "data" else value


@pytest.fixture(scope="module")
def unserved(stack_factory: Callable[..., Stack]) -> str:
    """Return the base URL of an API whose jobs no worker takes, cut into chunks of two records."""
    stack = stack_factory(
        INFER_QUEUE_NAME=QUEUE, INFER_CHUNK_SIZE=str(CHUNK), INFER_MAX_OPEN_REQUESTS_PER_KEY=str(STREAMS + 5)
    )
    return stack.start_api(free_port())


@pytest.fixture
def worker_store(redis_url: str, clean_redis: redis.Redis) -> JobStore:
    """Return the job store as a worker of the unserved queue sees it."""
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    return JobStore(connect(settings), settings)


def _submit(base: str, rows: int) -> dict[str, Any]:
    answer = httpx.post(
        f"{base}/v1/models/iris/jobs", content=_csv(rows), headers=_auth(**{"Content-Type": "text/csv"})
    )
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    return job


def _finish(store: JobStore, job_id: str, chunk: int) -> None:
    outputs = (json.dumps(OUTPUT) + "\n").encode() * CHUNK
    store.finish_chunks([FinishedChunk(job_id, chunk, outputs, CHUNK, 1.0)])


def test_a_job_is_sent_at_once_then_at_each_change_and_the_stream_closes_after_its_end(
    unserved: str, worker_store: JobStore
) -> None:
    """Queued at once; running, each chunk's progress and the success as they happen; then the end."""
    job = _submit(unserved, 3 * CHUNK)
    url = f"{unserved}/v1/jobs/{job['id']}/events"
    with httpx.stream("GET", url, headers=_auth(), timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response)
        first = next(events)
        assert (first["event"], first["id"]) == ("job", "0-0")
        assert first["data"]["status"] == "queued"
        assert first["data"]["progress"] == {"done": 0, "total": 6}
        assert "outputs" not in first["data"]
        assert first["data"]["id"] == job["id"]

        assert worker_store.claim([(job["id"], "iris")]) == ["running"]
        running = next(events)
        assert (running["id"], running["data"]["status"]) == ("0-1", "running")
        assert running["data"]["started_at"] is not None
        seen = []
        for chunk in range(3):
            _finish(worker_store, job["id"], chunk)
            event = next(events)
            seen.append((event["id"], event["data"]["status"], event["data"]["progress"]["done"]))
        assert seen == [("2-1", "running", 2), ("4-1", "running", 4), ("6-2", "succeeded", 6)]
        assert list(events) == [], "nothing after the final event: the stream closes"


def test_last_event_id_resumes_without_repeating_what_was_seen(unserved: str, worker_store: JobStore) -> None:
    """A stream opened again with the last id sends only later states; after the final one, 204."""
    job = _submit(unserved, CHUNK)
    url = f"{unserved}/v1/jobs/{job['id']}/events"
    with httpx.stream("GET", url, headers=_auth(), timeout=30) as response:
        assert next(_events(response))["id"] == "0-0"
    worker_store.claim([(job["id"], "iris")])
    with httpx.stream("GET", url, headers=_auth(**{"Last-Event-ID": "0-0"}), timeout=30) as response:
        resumed = next(_events(response))
        assert (resumed["id"], resumed["data"]["status"]) == ("0-1", "running")
    _finish(worker_store, job["id"], 0)
    with httpx.stream("GET", url, headers=_auth(**{"Last-Event-ID": "0-1"}), timeout=30) as response:
        assert [(e["id"], e["data"]["status"]) for e in _events(response)] == [("2-2", "succeeded")]
    ended = httpx.get(url, headers=_auth(**{"Last-Event-ID": "2-2"}), timeout=30)
    assert (ended.status_code, ended.content) == (204, b"")
    # An id this API never sent is no position: the client gets the job as it is.
    fresh = httpx.get(url, headers=_auth(**{"Last-Event-ID": "garbage"}), timeout=30)
    assert [e["id"] for e in _events(fresh)] == ["2-2"]


def test_a_stream_closes_at_its_maximum_duration_with_a_retry_hint(
    stack_factory: Callable[..., Stack], clean_redis: redis.Redis
) -> None:
    """Past INFER_EVENTS_MAX_S an unfinished job's stream ends with `retry:`, so the client comes back."""
    base = stack_factory(INFER_QUEUE_NAME=QUEUE, INFER_EVENTS_MAX_S="1").start_api(free_port())
    job = _submit(base, 1)
    started = time.monotonic()
    with httpx.stream("GET", f"{base}/v1/jobs/{job['id']}/events", headers=_auth(), timeout=30) as response:
        events = list(_events(response))
    assert [e.get("id") for e in events] == ["0-0", None]
    assert events[-1] == {"retry": "1000"}
    assert 0.9 < time.monotonic() - started < 20


def test_events_of_a_real_bulk_job_grow_until_its_success(api: Api) -> None:
    """A multi-chunk CSV job on the real worker: ids and progress only grow, the last is its success."""
    rows = 20_000  # four chunks of the session's 5,000
    csv = {"Content-Type": "text/csv"}
    answer = api.request("POST", "/v1/models/iris/jobs", data=_csv(rows), headers=csv)
    job_id = answer.json()["id"]
    url = f"{api.base}/v1/jobs/{job_id}/events"
    with httpx.stream("GET", url, headers=_auth(), timeout=60) as response:
        events = list(_events(response))
    marks = [tuple(int(n) for n in e["id"].split("-")) for e in events]
    assert marks == sorted(set(marks)), "each event is later than the one before"
    done = [e["data"]["progress"]["done"] for e in events]
    assert done == sorted(done)
    last = events[-1]["data"]
    assert (last["status"], last["progress"]) == ("succeeded", {"done": rows, "total": rows})
    assert all(e["data"]["status"] != "succeeded" for e in events[:-1])


def test_another_keys_job_and_an_unknown_one_are_not_found(api: Api) -> None:
    """Another key gets the 404 error body for a job, exactly as for an id that never existed."""
    job_id = api.submit("iris", [[5.1, 3.5, 1.4, 0.2]]).json()["id"]
    for key, path in ((OTHER_KEY, job_id), (KEY, "0" * 32)):
        answer = api.request("GET", f"/v1/jobs/{path}/events", key=key)
        error_of(answer.status_code, answer.json(), answer.text, 404, "unknown_job")


def _open_stream(base: str, job_id: str) -> socket.socket:
    """Open an events stream on a raw socket and return it once its first event has arrived."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    request = f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    sock.sendall(request.encode())
    received = b""
    while b"\n\n" not in received.partition(b"event: job")[2]:  # the first event, whole
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return sock


def test_hundreds_of_open_streams_neither_starve_submits_nor_hold_a_redis_connection_each(
    unserved: str, clean_redis: redis.Redis
) -> None:
    """200 open streams: a submit is answered quickly and Redis sees no connection per stream.

    The streams count against the key's open requests until they close.
    """
    job_id = _submit(unserved, 1)["id"]
    connections = int(clean_redis.info("clients")["connected_clients"])
    streams = [_open_stream(unserved, job_id) for _ in range(STREAMS)]
    try:
        assert int(clean_redis.info("clients")["connected_clients"]) < connections + 20
        started = time.monotonic()
        submitted = _submit(unserved, 1)
        assert time.monotonic() - started < 5, "a submit waited behind the open streams"
        assert submitted["status"] == "queued"
        streams += [_open_stream(unserved, job_id) for _ in range(5)]  # the key holds its 205 requests
        refused = httpx.get(f"{unserved}/v1/models", headers=_auth(), timeout=30)
        error_of(refused.status_code, refused.json(), refused.text, 429, "rate_limited")
        assert httpx.get(f"{unserved}/v1/models", headers=_auth(OTHER_KEY), timeout=30).status_code == 200
    finally:
        for sock in streams:
            sock.close()
    # A closed stream is noticed at its next keep-alive, and its place among the key's requests freed.
    wait_until(
        lambda: httpx.get(f"{unserved}/v1/models", headers=_auth(), timeout=30).status_code == 200,
        60,
        "the closed streams' places freed",
    )
