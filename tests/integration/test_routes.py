"""The routes' answers that need no worker, through Flask's test client on the session's real Redis.

The app is built by ``create_app`` with settings of its own (a queue no worker consumes, a small
body limit, short waits), so each table runs in milliseconds. What needs a real HTTP server
(the server's own limits, long-polls woken by a worker, streaming, faults) is tested against
gunicorn in the other modules.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api.app import create_app
from shared.settings import Settings, hash_api_key
from tests.integration.conftest import KEY, OTHER_KEY, error_of

QUEUE = "routes"  # no worker consumes it: every job stays queued
MAX_BODY_BYTES = 4096
MAX_RECORDS = 5
MAX_WAIT_S = 0.5
IRIS_RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
IRIS_ROW = [6.2, 2.9, 4.3, 1.3]
UNKNOWN_ID = "0" * 32


@pytest.fixture(scope="module")
def app(redis_url: str, registry_path: Path) -> Flask:
    """Return the API app with settings of its own, on the session's Redis and registry."""
    return create_app(
        Settings(
            redis_url=redis_url,
            registry_path=registry_path,
            api_key_hashes=[hash_api_key(KEY), hash_api_key(OTHER_KEY)],
            queue_name=QUEUE,
            max_body_bytes=MAX_BODY_BYTES,
            max_bulk_body_bytes=MAX_BODY_BYTES,  # CSV bodies have their own limit: the same one here
            max_records=MAX_RECORDS,
            max_wait_s=MAX_WAIT_S,
        )
    )


class Client:
    """Flask's test client of the app, sending the test's key unless told otherwise."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def request(self, method: str, path: str, key: str | None = KEY, **kwargs: Any) -> TestResponse:
        """Send a request with the Bearer key and return the response."""
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def submit(
        self, model: str = "iris", inputs: Any = None, key: str | None = KEY, **kwargs: Any
    ) -> TestResponse:
        """Submit a JSON job of one iris row unless told otherwise."""
        body = {"inputs": [IRIS_ROW] if inputs is None else inputs}
        return self.request("POST", f"/v1/models/{model}/jobs", key=key, json=body, **kwargs)

    def job_id(self, **kwargs: Any) -> str:
        """Submit a job that is accepted and return its id."""
        response = self.submit(**kwargs)
        assert response.status_code == 202, response.text
        return str(_json(response)["id"])


@pytest.fixture
def client(app: Flask, clean_redis: redis.Redis) -> Iterator[Client]:
    """Return a test client of the app with Redis emptied of jobs."""
    with app.test_client() as flask_client:
        yield Client(flask_client)


def _json(response: TestResponse) -> dict[str, Any]:
    """Return the response's JSON object."""
    body = response.json
    assert isinstance(body, dict), response.text
    return body


def _error(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    """Check the response is the error body with this status and code, and return the error."""
    return error_of(response.status_code, response.json, response.text, status, code)


def _nothing_queued(redis_client: redis.Redis) -> None:
    assert redis_client.llen(QUEUE) == 0
    assert not list(redis_client.scan_iter("job:*"))


# Every /v1 route, with the body it takes.
V1_ROUTES = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/iris", None),
    ("GET", "/v1/models/iris/versions/1.0.0", None),
    ("POST", "/v1/models/iris/jobs", {"inputs": [IRIS_ROW]}),
    ("GET", "/v1/jobs", None),
    ("GET", f"/v1/jobs/{UNKNOWN_ID}", None),
    ("POST", f"/v1/jobs/{UNKNOWN_ID}/cancel", None),
    ("GET", f"/v1/jobs/{UNKNOWN_ID}/outputs", None),
]


@pytest.mark.parametrize(("method", "path", "body"), V1_ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-key", f"Basic {KEY}", "Bearer ", KEY],
    ids=["missing", "wrong", "basic", "empty", "no-scheme"],
)
def test_every_v1_route_is_401_without_a_valid_key(
    client: Client, clean_redis: redis.Redis, method: str, path: str, body: Any, authorization: str | None
) -> None:
    """No key, a wrong key, another scheme or no scheme: 401 unauthorized on every /v1 route."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.request(method, path, key=None, json=body, headers=headers)
    _error(response, 401, "unauthorized")
    _nothing_queued(clean_redis)


def test_health_needs_no_key(client: Client) -> None:
    """/healthz answers without a key: it is not a /v1 route."""
    assert client.request("GET", "/healthz", key=None).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("GET", "/v1/models/no-such-model", None, "unknown_model"),
        ("POST", "/v1/models/no-such-model/jobs", {"inputs": [IRIS_ROW]}, "unknown_model"),
        ("GET", "/v1/models/%2e%2e", None, "unknown_model"),
        ("POST", "/v1/models/%2e%2e/jobs", {"inputs": [IRIS_ROW]}, "unknown_model"),
        ("GET", "/v1/models/iris/versions/9.9.9", None, "unknown_version"),
        ("GET", "/v1/models/iris/versions/%2e%2e", None, "unknown_version"),
        ("POST", "/v1/models/iris/jobs", {"inputs": [IRIS_ROW], "version": "9.9.9"}, "unknown_version"),
        ("GET", f"/v1/jobs/{UNKNOWN_ID}", None, "unknown_job"),
        ("GET", "/v1/jobs/not-an-id", None, "unknown_job"),
        ("GET", "/v1/jobs/%2e%2e", None, "unknown_job"),
        ("POST", f"/v1/jobs/{UNKNOWN_ID}/cancel", None, "unknown_job"),
        ("GET", f"/v1/jobs/{UNKNOWN_ID}/outputs", None, "unknown_job"),
        ("GET", "/v1/nothing-here", None, "not_found"),
        ("GET", "/nothing-here", None, "not_found"),
    ],
)
def test_unknown_models_versions_jobs_and_routes_are_404_with_their_code(
    client: Client, clean_redis: redis.Redis, method: str, path: str, body: Any, code: str
) -> None:
    """Each unknown thing has its own 404 code; the framework's 404 carries the error body too."""
    _error(client.request(method, path, json=body), 404, code)
    _nothing_queued(clean_redis)


def test_another_keys_job_is_404_as_if_it_never_existed(client: Client) -> None:
    """Another key can neither read, cancel, stream nor list a job: 404 unknown_job, as for no job."""
    job_id = client.job_id()
    for method, path in [("GET", ""), ("POST", "/cancel"), ("GET", "/outputs")]:
        _error(client.request(method, f"/v1/jobs/{job_id}{path}", key=OTHER_KEY), 404, "unknown_job")
    assert client.request("GET", "/v1/jobs", key=OTHER_KEY).json == {"jobs": [], "next_cursor": None}
    assert _json(client.request("GET", f"/v1/jobs/{job_id}"))["status"] == "queued"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/jobs", "GET"),
        ("PUT", "/v1/models/iris/jobs", "POST"),
        ("GET", f"/v1/jobs/{UNKNOWN_ID}/cancel", "POST"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", f"/v1/jobs/{UNKNOWN_ID}", "GET"),
    ],
)
def test_a_method_a_route_does_not_take_is_405_with_allow(
    client: Client, method: str, path: str, allowed: str
) -> None:
    """A known path with another method is 405 method_not_allowed, its Allow header naming the method."""
    response = client.request(method, path)
    _error(response, 405, "method_not_allowed")
    assert allowed in response.headers["Allow"]


class _Unreadable:
    """A request body that fails the test if the app reads any of it."""

    def read(self, *_: Any) -> bytes:
        raise AssertionError("the body over the limit was read")

    readline = read


@pytest.mark.parametrize("content_type", ["application/json", "text/csv"])
def test_a_body_over_the_limit_is_413_from_its_content_length_unread(
    client: Client, clean_redis: redis.Redis, content_type: str
) -> None:
    """A declared length over INFER_MAX_BODY_BYTES is 413 payload_too_large before a byte is read."""
    response = client.request(
        "POST",
        "/v1/models/iris/jobs",
        content_type=content_type,
        # What the server would hand over: the declared length, and a body the app must not touch.
        environ_overrides={"wsgi.input": _Unreadable(), "CONTENT_LENGTH": str(MAX_BODY_BYTES + 1)},
    )
    _error(response, 413, "payload_too_large")
    _nothing_queued(clean_redis)


def test_a_body_of_exactly_the_limit_is_read_and_accepted(client: Client) -> None:
    """The limit is the largest body taken: one of exactly INFER_MAX_BODY_BYTES is accepted."""
    body = b'{"inputs": [[6.2, 2.9, 4.3, 1.3]]}'
    body = body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + b"}"
    assert len(body) == MAX_BODY_BYTES
    response = client.request(
        "POST", "/v1/models/iris/jobs", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_a_body_neither_json_nor_csv_is_415(
    client: Client, clean_redis: redis.Redis, content_type: str | None
) -> None:
    """Only application/json and text/csv are taken: anything else, or no type, is 415."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.request(
        "POST", "/v1/models/iris/jobs", data=b'{"inputs": [[1, 2, 3, 4]]}', headers=headers
    )
    _error(response, 415, "unsupported_media_type")
    _nothing_queued(clean_redis)


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [',
        b'{"inputs": [[NaN, 1, 2, 3]]}',
        b'{"inputs": [[Infinity, 1, 2, 3]]}',
        b"\xff\xfe",
        b"",
    ],
    ids=["truncated", "nan", "infinity", "not-utf8", "empty"],
)
def test_a_body_that_is_not_json_is_400_invalid_json(
    client: Client, clean_redis: redis.Redis, body: bytes
) -> None:
    """Broken JSON, NaN and Infinity (not JSON), bytes that are not UTF-8, or nothing: 400 invalid_json."""
    headers = {"Content-Type": "application/json"}
    _error(client.request("POST", "/v1/models/iris/jobs", data=body, headers=headers), 400, "invalid_json")
    _nothing_queued(clean_redis)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": 3}, "inputs"),
        ({"inputs": {"sepal_length": 1}}, "inputs"),
        ({"inputs": [IRIS_ROW], "colour": 1}, "colour"),
        ({"inputs": [IRIS_ROW], "deadline_s": -1}, "deadline_s"),
        ({"inputs": [IRIS_ROW], "deadline_s": 0}, "deadline_s"),
        ({"inputs": [IRIS_ROW], "deadline_s": "soon"}, "deadline_s"),
        ({"inputs": [IRIS_ROW], "deadline_s": 10**9}, "deadline_s"),
        ({"inputs": [IRIS_ROW], "version": 1}, "version"),
        ({"inputs": [IRIS_ROW], "version": "1" * 33}, "version"),
        ({"inputs": [IRIS_ROW] * (MAX_RECORDS + 1)}, "inputs"),
        ([IRIS_ROW], None),
    ],
    ids=[
        "no-inputs",
        "no-records",
        "inputs-a-number",
        "inputs-an-object",
        "unknown-field",
        "negative-deadline",
        "zero-deadline",
        "deadline-a-string",
        "deadline-past-a-week",
        "version-a-number",
        "version-too-long",
        "over-max-records",
        "body-a-list",
    ],
)
def test_a_submit_body_of_the_wrong_shape_is_422_naming_the_field(
    client: Client, clean_redis: redis.Redis, body: Any, field: str | None
) -> None:
    """Each envelope mistake is 422 invalid_input naming its field, and nothing is queued."""
    error = _error(client.request("POST", "/v1/models/iris/jobs", json=body), 422, "invalid_input")
    assert error["details"][0]["field"] == field
    _nothing_queued(clean_redis)


def test_invalid_records_are_422_naming_each_record_and_field_and_queue_nothing(
    client: Client, clean_redis: redis.Redis
) -> None:
    """Each bad record is named by index and field; the good one among them is not, and no job is made."""
    inputs = [
        IRIS_ROW,
        {"sepal_length": "wide", "sepal_width": 3.0, "petal_length": 1.0},
        [1, 2],
        {**IRIS_RECORD, "colour": 1},
        True,
    ]
    error = _error(client.submit(inputs=inputs), 422, "invalid_input")
    found = {(d["index"], d["field"]) for d in error["details"]}
    assert {(1, "sepal_length"), (1, "petal_width"), (2, None), (3, "colour"), (4, None)} <= found
    assert 0 not in {d["index"] for d in error["details"]}
    _nothing_queued(clean_redis)


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("status=bogus", ["status"]),
        ("limit=0", ["limit"]),
        ("limit=501", ["limit"]),
        ("limit=ten", ["limit"]),
        ("cursor=not-a-cursor", ["cursor"]),
        ("colour=blue", ["colour"]),
        ("status=bogus&limit=0&cursor=x", ["status", "cursor", "limit"]),
    ],
)
def test_a_list_query_out_of_its_range_is_422_naming_each_parameter(
    client: Client, query: str, fields: list[str]
) -> None:
    """Unknown statuses, limits outside 1..500, foreign cursors and unknown parameters are named."""
    error = _error(client.request("GET", f"/v1/jobs?{query}"), 422, "invalid_input")
    assert [d["field"] for d in error["details"]] == fields


def test_the_same_idempotency_key_returns_the_same_job_and_another_body_is_409(client: Client) -> None:
    """The same key and body return the same job; the same key with another body is 409; one job exists."""
    headers = {"Idempotency-Key": "order-42"}
    first = client.submit(headers=headers)
    again = client.submit(headers=headers)
    assert first.status_code == 202
    assert _json(again)["id"] == _json(first)["id"]
    _error(client.submit(inputs=[IRIS_RECORD], headers=headers), 409, "conflict")
    _error(client.submit(model="scam-email", inputs=[["hi"]], headers=headers), 409, "conflict")
    assert _json(client.submit(key=OTHER_KEY, headers=headers))["id"] != _json(first)["id"]
    assert len(_json(client.request("GET", "/v1/jobs"))["jobs"]) == 1


def test_cancel_ends_a_queued_job_once_and_its_outputs_are_409_until_it_succeeds(client: Client) -> None:
    """Cancel answers the canceled job; cancelling it again, or asking for its outputs, is 409 conflict."""
    job_id = client.job_id()
    _error(client.request("GET", f"/v1/jobs/{job_id}/outputs"), 409, "conflict")
    canceled = client.request("POST", f"/v1/jobs/{job_id}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert _json(canceled)["status"] == "canceled"
    assert _json(canceled)["error"]["code"] == "canceled"
    again = _error(client.request("POST", f"/v1/jobs/{job_id}/cancel"), 409, "conflict")
    assert again["details"] == [{"field": "status", "reason": "canceled"}]
    _error(client.request("GET", f"/v1/jobs/{job_id}/outputs"), 409, "conflict")


def test_the_list_pages_newest_first_by_limit_and_cursor_and_filters(client: Client) -> None:
    """Pages of `limit` jobs, newest first, chained by next_cursor to a last page whose cursor is null."""
    iris = [client.job_id() for _ in range(5)]
    scam = [client.job_id(model="scam-email", inputs=[["hello"]]) for _ in range(2)]
    newest_first = [*scam[::-1], *iris[::-1]]

    def pages(query: str) -> list[list[str]]:
        found: list[list[str]] = []
        cursor = ""
        while True:
            page = _json(client.request("GET", f"/v1/jobs?{query}{cursor}"))
            found.append([job["id"] for job in page["jobs"]])
            if page["next_cursor"] is None:
                return found
            assert page["next_cursor"] == found[-1][-1]  # the cursor is the last id given
            cursor = f"&cursor={page['next_cursor']}"

    assert pages("limit=3") == [newest_first[:3], newest_first[3:6], newest_first[6:]]
    assert pages("limit=7") == [newest_first]
    assert pages("limit=500") == [newest_first]
    assert pages("") == [newest_first]  # the default limit, 50
    assert pages("limit=2&model=iris") == [iris[::-1][:2], iris[::-1][2:4], iris[::-1][4:]]
    for job_id in (iris[1], scam[0]):
        assert client.request("POST", f"/v1/jobs/{job_id}/cancel").status_code == 200
    assert pages("status=canceled") == [[scam[0], iris[1]]]
    assert pages("status=queued&limit=2") == [
        [scam[1], iris[4]],
        [iris[3], iris[2]],
        [iris[0]],
    ]
    assert pages("status=canceled&model=iris") == [[iris[1]]]
    assert pages("status=succeeded") == [[]]
    assert pages("model=no-such-model") == [[]]


def _timed(client: Client, method: str, path: str, **kwargs: Any) -> tuple[TestResponse, float]:
    started = time.monotonic()
    response = client.request(method, path, **kwargs)
    return response, time.monotonic() - started


@pytest.mark.parametrize(
    ("query", "prefer", "applied", "held"),
    [
        ("", None, None, 0),
        ("?wait=0", None, "wait=0", 0),
        ("?wait=0.2", None, "wait=0.2", 0.2),
        ("?wait=1000", None, f"wait={MAX_WAIT_S:g}", MAX_WAIT_S),  # capped at INFER_MAX_WAIT_S
        ("", "wait=0.2", "wait=0.2", 0.2),
        ("", "respond-async, wait=0.2", "wait=0.2", 0.2),
        ("", "wait=1000", f"wait={MAX_WAIT_S:g}", MAX_WAIT_S),
        ("", "wait=soon", None, 0),  # a preference the server does not understand is ignored
        ("?wait=0", "wait=0.2", "wait=0", 0),  # the query wins over the header
    ],
)
def test_a_poll_of_a_queued_job_holds_as_long_as_the_wait_asked_capped(
    client: Client, query: str, prefer: str | None, applied: str | None, held: float
) -> None:
    """?wait= and Prefer: wait= hold a poll of an unfinished job that long (at most INFER_MAX_WAIT_S)."""
    job_id = client.job_id()
    headers = {"Prefer": prefer} if prefer else {}
    response, took = _timed(client, "GET", f"/v1/jobs/{job_id}{query}", headers=headers)
    assert response.status_code == 200, response.text
    assert _json(response)["status"] == "queued"
    assert response.headers.get("Preference-Applied") == applied
    assert held <= took < held + 1  # a loaded machine is slow, never quick


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan", "1e999", ""])
def test_a_wait_query_that_is_not_a_number_of_seconds_is_422(client: Client, value: str) -> None:
    """?wait= must be a finite number of seconds, 0 or more: anything else is 422 naming wait."""
    job_id = client.job_id()
    error = _error(client.request("GET", f"/v1/jobs/{job_id}?wait={value}"), 422, "invalid_input")
    assert error["details"][0]["field"] == "wait"


def test_a_submit_with_prefer_wait_on_a_queue_nobody_consumes_answers_202_after_the_wait(
    client: Client,
) -> None:
    """Prefer: wait on a submit holds it that long; a job still queued then is 202 with its Location."""
    response, took = _timed(
        client, "POST", "/v1/models/iris/jobs", json={"inputs": [IRIS_ROW]}, headers={"Prefer": "wait=0.2"}
    )
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "wait=0.2"
    assert response.headers["Location"] == f"/v1/jobs/{_json(response)['id']}"
    assert _json(response)["status"] == "queued"
    assert 0.2 <= took < 1.2
