"""A heavy request does not stall the other requests its API process serves."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable

import orjson
import pytest
import redis
import requests

from tests.integration.conftest import KEY, Api
from tools.stack import Stack, free_port

# The longest /healthz may wait: a third of the liveness probe's 3 s timeout (deploy/k8s/api.yaml). What
# still holds the interpreter is one C call at a time (orjson parsing a 5 MB body: 0.15 s here, 0.25 s
# at worst alone), which a loaded CI machine stretched past the half second this bound once was.
MAX_PROBE_S = 1.0

HEAVY: dict[str, tuple[str, str, Callable[[], bytes]]] = {
    "400,000 tiny JSON text records": (
        "scam-email",
        "application/json",
        lambda: orjson.dumps({"inputs": [{"text": "a"}] * 400_000}),
    ),
    "a CSV header of a million columns": (
        "iris",
        "text/csv",
        lambda: b",".join(b"c%d" % i for i in range(1_000_000)) + b"\n1\n",
    ),
    "400,000 text CSV rows": ("scam-email", "text/csv", lambda: b"text\n" + b"hello there\n" * 400_000),
}


def _post(base: str, path: str, content_type: str, body: bytes) -> int:
    """Send a POST and return the answer's status, sending no more of the body once answered (as curl does).

    A client that goes on sending after an early answer has the server drain the rest, which is
    the server's reading, not the request's processing this test is about.
    """
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        for start in range(0, len(body), 1 << 16):
            if select.select([conn], [], [], 0)[0]:
                break
            conn.sendall(body[start : start + (1 << 16)])
        answer = b""
        while b"\r\n" not in answer:
            received = conn.recv(4096)
            assert received, "the server closed the connection without answering"
            answer += received
    return int(answer.split()[1])


@pytest.fixture(scope="module")
def lone_stack(stack_factory: Callable[..., Stack]) -> Stack:
    """Start an API of one process whose jobs go to a queue no worker consumes."""
    stack = stack_factory(INFER_QUEUE_NAME="event-loop")
    stack.start_api(free_port())
    return stack


@pytest.fixture
def lone_api(lone_stack: Stack, clean_redis: redis.Redis) -> Api:
    """Return a client of the one-process API, with Redis emptied of jobs."""
    return Api(lone_stack.urls["api"])


@pytest.mark.quiet  # its bound on /healthz is a second: no other test loads the machine meanwhile
@pytest.mark.parametrize("what", list(HEAVY))
def test_the_process_answers_healthz_while_it_takes_a_heavy_request(lone_api: Api, what: str) -> None:
    """While one process parses and validates a large body, its /healthz answers within a second."""
    model, content_type, make = HEAVY[what]
    body = make()
    probes: list[float] = []
    heavy_open = threading.Event()
    heavy_done = threading.Event()

    def probe() -> None:
        with requests.Session() as session:
            while not heavy_done.is_set():
                started = time.monotonic()
                session.get(lone_api.base + "/healthz", timeout=60).raise_for_status()
                if heavy_open.is_set():
                    probes.append(time.monotonic() - started)
                heavy_open.wait(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        heavy_open.set()
        started = time.monotonic()
        status = _post(lone_api.base, f"/v1/models/{model}/jobs", content_type, body)
        took = time.monotonic() - started
    finally:
        heavy_done.set()
        prober.join()
    assert status in (202, 422), status
    assert probes, "no probe was answered while the request was open"
    assert max(probes) < MAX_PROBE_S, f"/healthz took {max(probes):.2f}s during a request of {took:.2f}s"


@pytest.mark.parametrize(
    ("model", "content_type", "body", "index"),
    [
        (
            "iris",
            "application/json",
            orjson.dumps({"inputs": [[1, 2, 3, 4]] * 2_500 + [[1, 2, "3", 4]]}),
            2_500,
        ),
        ("scam-email", "application/json", orjson.dumps({"inputs": [["hi"]] * 2_500 + [[""]]}), 2_500),
        ("scam-email", "text/csv", b"text\n" + b"hi\n" * 30_000 + b'""\n', 30_000),
    ],
    ids=["JSON numbers", "JSON text", "CSV text"],
)
def test_a_bad_record_in_a_body_checked_off_the_loop_is_named_and_logs_no_failure(
    lone_stack: Stack, lone_api: Api, model: str, content_type: str, body: bytes, index: int
) -> None:
    """Records checked on a thread are refused as the request's own 422, not as a failure the server logs."""
    log = lone_stack.run_dir / "api.log"
    logged = log.stat().st_size
    response = lone_api.request(
        "POST", f"/v1/models/{model}/jobs", data=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 422, response.text[:300]
    assert [d["index"] for d in response.json()["error"]["details"]] == [index]
    with log.open("rb") as handle:
        handle.seek(logged)
        assert b"Traceback" not in handle.read()
