"""The client's retry rules, on answers a service only gives under load: 429 with Retry-After, 503."""

from __future__ import annotations

import time

import httpx
import pytest
from inference_client import Client, QueueFull, Retry

JOB = {"id": "a" * 32, "model": "iris", "status": "queued", "progress": {"done": 0, "total": 1}}


def _service(*answers: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return httpx.MockTransport(handle), seen


def test_429_waits_its_retry_after_and_503_backs_off_both_with_the_same_key() -> None:
    """A submit answered 429 then 503 is sent again after Retry-After, then after backoff, same key."""
    busy = {"error": {"code": "rate_limited", "message": "slow down"}}
    down = {"error": {"code": "unavailable", "message": "nothing was accepted"}}
    transport, seen = _service(
        httpx.Response(429, json=busy, headers={"Retry-After": "0.3"}),
        httpx.Response(503, json=down),
        httpx.Response(202, json=JOB),
    )
    client = Client("http://service.invalid", "k", transport=transport, retry=Retry(backoff_s=0.05))
    started = time.monotonic()
    job = client.submit("iris", [[5.1, 3.5, 1.4, 0.2]])
    assert time.monotonic() - started >= 0.35
    assert job.id == JOB["id"]
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(seen) == 3
    assert len(keys) == 1


def test_a_queue_still_full_after_the_retries_raises_queue_full_with_retry_after() -> None:
    """When every try is refused, the last answer is raised typed, with its Retry-After."""
    full = {"error": {"code": "queue_full", "message": "queue is full", "details": []}}
    answers = [httpx.Response(429, json=full, headers={"Retry-After": "0"}) for _ in range(2)]
    transport, seen = _service(*answers)
    client = Client("http://service.invalid", "k", transport=transport, retry=Retry(attempts=2))
    with pytest.raises(QueueFull) as caught:
        client.submit("iris", [[5.1, 3.5, 1.4, 0.2]])
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (429, "queue_full", 0)
    assert len(seen) == 2
