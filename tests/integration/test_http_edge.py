"""The HTTP server's edges: requests it refuses before the app sees them, and what they leave in /metrics."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from api.contract import Error
from tests.integration.conftest import Api
from tools.stack import Stack, free_port

# gunicorn's limits the API ships (api/server.py): one header line, and the request line.
HEADER_LINE_MAX = 8190
KEY_MAX = HEADER_LINE_MAX - len("Authorization: Bearer \r\n")
REQUEST_LINE_MAX = 4094
KEEPALIVE_S = 2  # gunicorn's wait for a connection's next request, which the API keeps


def _raw(base: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes on a new connection, read until the server closes it, and return status, headers, body."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(data)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _error(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """Check the response is the API's JSON error body on a closing connection and return its error."""
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    document = json.loads(body)
    Error.model_validate(document)  # the shape /openapi.json declares for every error, details included
    error: dict[str, Any] = document["error"]
    return error


def test_an_oversized_authorization_header_gets_431_with_the_longest_key_named(api: Api) -> None:
    """A 64 KB Authorization header is 431 header_too_large in the error body, naming the longest key."""
    answer = api.request("GET", "/v1/models", key="k" * 65536)
    assert answer.status_code == 431
    error = _error({k.lower(): v for k, v in answer.headers.items()}, answer.content)
    assert error["code"] == "header_too_large"
    assert f"at most {KEY_MAX} characters" in error["message"]


def test_the_longest_key_the_message_allows_reaches_the_app(api: Api) -> None:
    """A key of the length the 431 message names is read (and refused as unknown); one more is 431."""
    longest = api.request("GET", "/v1/models", key="k" * KEY_MAX)
    assert longest.status_code == 401
    assert longest.json()["error"]["code"] == "unauthorized"
    over = api.request("GET", "/v1/models", key="k" * (KEY_MAX + 1))
    assert over.status_code == 431
    assert over.json()["error"]["code"] == "header_too_large"


def test_an_over_long_request_line_gets_414_every_time(api: Api) -> None:
    """A 20 KB request line is 414 uri_too_long, and the answer arrives whole though the client sent more."""
    line = b"GET /v1/models?" + b"q" * 20_000 + b" HTTP/1.1\r\n"
    for _ in range(10):  # a close with unread bytes would reset the connection and lose the answer
        status, headers, body = _raw(api.base, line + b"Host: test\r\n\r\n")
        assert status == 414
        error = _error(headers, body)
        assert error["code"] == "uri_too_long"
        assert str(REQUEST_LINE_MAX) in error["message"]


def test_a_malformed_request_gets_400_invalid_request(api: Api) -> None:
    """A header name with a space, a garbled request line or HTTP/9.9 is 400 invalid_request."""
    for data in (
        b"GET /healthz HTTP/1.1\r\nHo st: test\r\n\r\n",
        b"\x00\x01 nonsense\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\nHost: test\r\n\r\n",
    ):
        status, headers, body = _raw(api.base, data)
        assert status == 400, data
        assert _error(headers, body)["code"] == "invalid_request"


def test_invented_methods_add_no_metric_series(api: Api) -> None:
    """200 requests with 200 invented methods leave /metrics about the size it was, naming none of them."""
    session = requests.Session()
    api.request("GET", "/metrics", key=None)  # the scrape's own series exist before the first measure
    before = len(api.request("GET", "/metrics", key=None).content)
    invented = ["INVENTED" + "".join(chr(ord("A") + int(d)) for d in f"{i:03d}") for i in range(200)]
    for method in invented:
        answer = session.request(method, api.base + "/x", timeout=30)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"
    text = api.request("GET", "/metrics", key=None).text
    assert len(text.encode()) - before < 4096
    assert "INVENTED" not in text
    assert 'infer_http_requests_total{method="other",route="unmatched",status="404"} 200.0' in text


def _connection(base: str) -> http.client.HTTPConnection:
    url = urlsplit(base)
    return http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)


def test_a_request_sent_seconds_after_its_connection_opened_is_answered(api: Api) -> None:
    """A client slow to send its first request (past gunicorn's keep-alive wait) still gets its answer."""
    conn = _connection(api.base)
    conn.connect()
    time.sleep(KEEPALIVE_S + 1)  # the slow client itself: what is tested is what the server does meanwhile
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200


def test_an_idle_connection_is_closed_after_the_keep_alive_wait(api: Api) -> None:
    """A connection left idle after its answer is closed within the keep-alive wait, freeing its place."""
    conn = _connection(api.base)
    conn.request("GET", "/healthz")
    assert conn.getresponse().read()
    assert conn.sock is not None
    conn.sock.settimeout(KEEPALIVE_S * 5)  # past it, recv raises and the test fails
    assert conn.sock.recv(1) == b""  # closed by the server


def test_a_request_that_arrived_while_the_process_was_busy_past_the_keep_alive_is_answered(
    stack_factory: Callable[..., Stack],
) -> None:
    """A request on a kept-alive connection that waits in the socket while the API cannot run is answered."""
    stack = stack_factory()
    conn = _connection(stack.start_api(free_port()))
    conn.request("GET", "/healthz")
    assert conn.getresponse().read()
    master = stack.procs["api"].pid
    (worker,) = (int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split())
    os.kill(worker, signal.SIGSTOP)  # what a burst does to the process, made certain
    try:
        conn.request("GET", "/healthz")
        time.sleep(KEEPALIVE_S + 1)  # the keep-alive wait falls due while the request waits to be read
    finally:
        os.kill(worker, signal.SIGCONT)
    assert conn.getresponse().status == 200
