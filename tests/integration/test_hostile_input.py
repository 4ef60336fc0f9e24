"""Hostile requests: each gets its exact 4xx and error body, and none enqueues anything."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kombu import Connection, Exchange, Producer

from tests.integration.conftest import Api
from tools.stack import Stack, free_port

IRIS = "/v1/models/iris/jobs"
JSON = {"Content-Type": "application/json"}
CSV = {"Content-Type": "text/csv"}
LIMIT = 200_000  # the strict API's body limit
GOOD = [5.1, 3.5, 1.4, 0.2]
# Keys that are no job's: the broker's, rate counters, and each queue's reaper lock, which every
# API's reaper sets now and then whatever is sent.
BOOKKEEPING = ("_kombu", "unacked", "rate:", "reaper:")


def _kept_keys(client: redis.Redis) -> list[str]:
    """Return the keys a request left in Redis, bookkeeping aside."""
    return [k for k in client.scan_iter(count=1000) if not k.startswith(BOOKKEEPING)]


def _nested(depth: int) -> bytes:
    return b'{"inputs": [' + b"[" * depth + b"1" + b"]" * depth + b"]}"


# (what is tried, path, body, headers, status, code, field named in details or None)
CASES: list[tuple[str, str, bytes, dict[str, str], int, str, str | None]] = [
    ("NaN", IRIS, b'{"inputs": [[NaN, 1, 2, 3]]}', JSON, 400, "invalid_json", None),
    ("Infinity", IRIS, b'{"inputs": [[Infinity, 1, 2, 3]]}', JSON, 400, "invalid_json", None),
    ("number beyond double", IRIS, b'{"inputs": [[1e400, 1, 2, 3]]}', JSON, 400, "invalid_json", None),
    (
        "number beyond float32",
        IRIS,
        b'{"inputs": [[1e39, 1, 2, 3]]}',
        JSON,
        422,
        "invalid_input",
        "sepal_length",
    ),
    (
        "huge integer",
        IRIS,
        b'{"inputs": [[' + b"9" * 40 + b", 1, 2, 3]]}",
        JSON,
        422,
        "invalid_input",
        "sepal_length",
    ),
    (
        "integer beyond double",
        IRIS,
        b'{"inputs": [[' + b"9" * 400 + b", 1, 2, 3]]}",
        JSON,
        400,
        "invalid_json",
        None,
    ),
    (
        "string for a number",
        IRIS,
        b'{"inputs": [{"sepal_length": "5.1", "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}',
        JSON,
        422,
        "invalid_input",
        "sepal_length",
    ),
    (
        "boolean for a number",
        IRIS,
        b'{"inputs": [[true, 1, 2, 3]]}',
        JSON,
        422,
        "invalid_input",
        "sepal_length",
    ),
    (
        "missing field",
        IRIS,
        b'{"inputs": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}]}',
        JSON,
        422,
        "invalid_input",
        "petal_width",
    ),
    (
        "extra field",
        IRIS,
        b'{"inputs": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2, '
        b'"x": 1}]}',
        JSON,
        422,
        "invalid_input",
        "x",
    ),
    ("empty input list", IRIS, b'{"inputs": []}', JSON, 422, "invalid_input", "inputs"),
    (
        "too many records",
        IRIS,
        b'{"inputs": [' + b",".join([b"[1,2,3,4]"] * 101) + b"]}",
        JSON,
        422,
        "invalid_input",
        "inputs",
    ),
    ("inputs not a list", IRIS, b'{"inputs": "all of them"}', JSON, 422, "invalid_input", "inputs"),
    ("body not an object", IRIS, b"[[1, 2, 3, 4]]", JSON, 422, "invalid_input", None),
    ("deeply nested JSON", IRIS, _nested(50_000), JSON, 400, "invalid_json", None),
    ("nested within the parser's limit", IRIS, _nested(500), JSON, 422, "invalid_input", None),
    ("invalid UTF-8", IRIS, b'{"inputs": [{"text": "\xff\xfe"}]}', JSON, 400, "invalid_json", None),
    (
        "invalid UTF-8 in CSV",
        IRIS,
        b"sepal_length,sepal_width,petal_length,petal_width\n\xff,1,2,3\n",
        {"Content-Type": "text/csv"},
        400,
        "invalid_json",
        None,
    ),
    (
        "wrong content type",
        IRIS,
        b'{"inputs": [[1, 2, 3, 4]]}',
        {"Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "no content type",
        IRIS,
        b'{"inputs": [[1, 2, 3, 4]]}',
        {"Content-Type": ""},
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "form body",
        IRIS,
        b"inputs=1",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "body over the limit",
        IRIS,
        b'{"inputs": [' + b"[1,2,3,4]," * 30_000 + b"[1,2,3,4]]}",
        JSON,
        413,
        "payload_too_large",
        None,
    ),
    (
        "model name traversal",
        "/v1/models/..%2f..%2fetc%2fpasswd/jobs",
        b'{"inputs": [[1, 2, 3, 4]]}',
        JSON,
        404,
        "not_found",
        None,
    ),
    (
        "model name dots",
        "/v1/models/%2e%2e/jobs",
        b'{"inputs": [[1, 2, 3, 4]]}',
        JSON,
        404,
        "unknown_model",
        None,
    ),
    (
        "model name with a slash",
        "/v1/models/iris%2f..%2firis/jobs",
        b'{"inputs": [[1, 2, 3, 4]]}',
        JSON,
        404,
        "not_found",
        None,
    ),
    (
        "version traversal",
        IRIS,
        b'{"inputs": [[1, 2, 3, 4]], "version": "../../etc"}',
        JSON,
        404,
        "unknown_version",
        None,
    ),
    (
        "CSV header far wider than the model",
        IRIS,
        b",".join(b"c%d" % i for i in range(20_000)) + b"\n1\n",
        CSV,
        422,
        "invalid_input",
        "header",
    ),
    ("job id traversal", "/v1/jobs/%2e%2e%2f%2e%2e%2fetc/cancel", b"", JSON, 404, "not_found", None),
    ("job id of another shape", "/v1/jobs/job:1/cancel", b"", JSON, 404, "unknown_job", None),
]


@pytest.fixture(scope="module")
def strict_api(stack_factory: Callable[..., Stack], api_base: str) -> Api:
    """Start an API with a small body limit and at most 100 records a job."""
    limits = {"INFER_MAX_BODY_BYTES": str(LIMIT), "INFER_MAX_BULK_BODY_BYTES": str(LIMIT)}  # CSV's too
    return Api(stack_factory(**limits, INFER_MAX_RECORDS="100").start_api(free_port()))


@pytest.mark.parametrize(
    ("what", "path", "body", "headers", "status", "code", "field"), CASES, ids=[case[0] for case in CASES]
)
def test_each_malformed_request_gets_its_exact_error_and_enqueues_nothing(
    strict_api: Api, clean_redis: redis.Redis, what: str, path: str, body: bytes, headers: dict[str, str],
    status: int, code: str, field: str | None,
) -> None:  # fmt: skip
    """A malformed request is refused with the status, code and field API.md gives, leaving nothing queued."""
    response = strict_api.request("POST", path, data=body, headers=headers)
    assert response.status_code == status, (what, response.text[:300])
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert field in {d.get("field") for d in error["details"]}
    assert clean_redis.llen("inference") == 0
    assert _kept_keys(clean_redis) == []


def test_a_body_over_the_limit_is_refused_before_it_is_sent_whole(strict_api: Api) -> None:
    """A declared length over the limit is answered 413 at once, though the body never arrives."""
    host, port = strict_api.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/models/iris/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key-alpha\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n" + b'{"inputs": ['
        )
        started = time.monotonic()
        answer = b""
        while b"payload_too_large" not in answer and time.monotonic() - started < 5:
            answer += conn.recv(4096)
    assert time.monotonic() - started < 5
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"payload_too_large"' in answer


def _answer(conn: socket.socket) -> tuple[int, dict[str, Any]]:
    """Read one HTTP/1.1 answer with a Content-Length from the connection: its status and JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536) or _closed()
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for n, v in (line.split(":", 1) for line in lines[1:]) if n.lower() == "content-length"
    )
    while len(body) < length:
        body += conn.recv(65536) or _closed()
    return int(lines[0].split()[1]), orjson.loads(body[:length])


def _closed() -> bytes:
    raise AssertionError("the server closed the connection before answering")


def _send_chunked(base: str, content_type: str, body: bytes, end: bool) -> socket.socket:
    """Open a connection and send the body chunked, 16 KB a chunk, with the last chunk only if told."""
    host, port = base.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(
        f"POST /v1/models/iris/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key-alpha\r\n"
        f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    for start in range(0, len(body), 16_384):
        part = body[start : start + 16_384]
        conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    if end:
        conn.sendall(b"0\r\n\r\n")
    return conn


OVER_THE_LIMIT = {
    "application/json": b'{"inputs": [' + b"[1,2,3,4]," * (LIMIT // 10 + 5_000),
    # Blank lines are no rows: the bytes, not the records, pass a limit.
    "text/csv": b"sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n" + b"\n" * (LIMIT + 50_000),
}


@pytest.mark.parametrize("content_type", list(OVER_THE_LIMIT))
def test_a_chunked_body_over_the_limit_is_413_once_the_limit_is_passed(
    strict_api: Api, clean_redis: redis.Redis, content_type: str
) -> None:
    """Without a Content-Length the limit is counted while reading: 413 before the body has even ended."""
    body = OVER_THE_LIMIT[content_type]
    assert LIMIT < len(body) < LIMIT + 100_000
    with _send_chunked(strict_api.base, content_type, body, end=False) as conn:
        status, answer = _answer(conn)
    assert status == 413, answer
    assert answer["error"]["code"] == "payload_too_large"
    assert _kept_keys(clean_redis) == []


def test_a_chunked_body_of_exactly_the_limit_is_accepted(strict_api: Api, clean_redis: redis.Redis) -> None:
    """The limit is a maximum: a chunked body of exactly that many bytes is a job."""
    body = b'{"inputs": [[5.1, 3.5, 1.4, 0.2]]}'
    body = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    with _send_chunked(strict_api.base, "application/json", body, end=True) as conn:
        status, answer = _answer(conn)
    assert status == 202, answer


def test_a_csv_body_of_exactly_the_limit_is_accepted(strict_api: Api) -> None:
    """A CSV body of exactly the limit (blank lines are no rows) is a job, not a 413."""
    body = b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"
    body += b"\n" * (LIMIT - len(body))
    response = strict_api.request("POST", IRIS, data=body, headers=CSV)
    assert response.status_code == 202, response.text[:300]
    assert response.json()["progress"]["total"] == 1


@pytest.mark.parametrize("path", ["/v1/jobs//outputs", "/v1/jobs//cancel", "/v1/jobs//"])
def test_an_empty_job_id_is_the_404_error_body_not_a_redirect(api: Api, path: str) -> None:
    """Doubled slashes are not merged into another route by a 308 HTML redirect: the path is not found."""
    method = "POST" if path.endswith("cancel") else "GET"
    response = api.request(method, path, allow_redirects=False)
    assert response.status_code == 404, response.text[:300]
    assert response.json()["error"]["code"] == "not_found"


def test_a_pickle_message_on_the_queue_is_refused_and_never_run(
    service: Stack, redis_url: str, tmp_path: Path, clean_redis: redis.Redis, api: Api
) -> None:
    """A task message serialised with pickle, carrying code to run, is refused by the worker unopened."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    with Connection(redis_url) as conn:
        producer = Producer(
            conn.channel(), exchange=Exchange("inference", type="direct"), routing_key="inference"
        )
        producer.publish(
            ((Exploit(),), {}, {}),
            serializer="pickle",
            headers={
                "task": "infer.predict",
                "id": "exploit",
                "lang": "py",
                "argsrepr": "",
                "kwargsrepr": "",
            },
            declare=[],
        )
    log = service.run_dir / "worker-main.log"
    deadline = time.monotonic() + 10
    while b"untrusted content of type pickle" not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b"untrusted content of type pickle" in log.read_bytes()
    assert not marker.exists()
    assert clean_redis.llen("inference") == 0  # the worker took it off the queue, and threw it away
    # The worker still serves afterwards.
    assert api.submit("iris", [GOOD], wait=10).json()["status"] == "succeeded"
