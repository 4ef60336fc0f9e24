"""Job.events() against the real service: sync and asyncio, resumed across closes, and the CLI's fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from inference_client import AsyncClient, Client, ServiceUnreachable, WaitTimeout
from inference_client.progress import EventsProgress

from tests.client.conftest import KEY, breast_cancer_csv
from tests.client.test_client import IRIS
from tools.stack import Stack, free_port


def test_events_yield_the_job_at_each_change_until_its_success(client: Client) -> None:
    """A bulk job's events come in order, the last one its success; the Job is updated with them."""
    job = client.submit_csv("breast-cancer", breast_cancer_csv(20_000))
    seen = list(job.events(timeout=60))
    assert seen[-1]["status"] == "succeeded"
    assert seen[-1]["progress"] == {"done": 20_000, "total": 20_000}
    assert all(event["status"] != "succeeded" for event in seen[:-1])
    done = [event["progress"]["done"] for event in seen]
    assert done == sorted(done)
    assert all("outputs" not in event for event in seen)
    assert job.status == "succeeded"
    assert sum(1 for _ in job.outputs()) == 20_000


def test_async_events_follow_a_job_to_its_end(api_base: str, clean_redis: Any) -> None:
    """AsyncJob.events() yields the same Jobs, awaited."""

    async def scenario() -> list[dict[str, Any]]:
        async with AsyncClient(api_base, KEY) as client:
            job = await client.submit("iris", IRIS)
            return [event async for event in job.events(timeout=30)]

    seen = asyncio.run(scenario())
    assert seen[-1]["status"] == "succeeded"
    assert seen[-1]["progress"] == {"done": 2, "total": 2}


def test_a_stream_the_service_closes_is_resumed_without_repeating_an_event(
    stack_factory: Callable[..., Stack], clean_redis: Any
) -> None:
    """With streams closed after 1 s, three seconds of a waiting job are one event, then WaitTimeout."""
    stack = stack_factory(INFER_QUEUE_NAME="client-events", INFER_EVENTS_MAX_S="1")
    with Client(stack.start_api(free_port()), KEY) as client:
        job = client.submit("iris", IRIS)
        seen: list[dict[str, Any]] = []
        started = time.monotonic()
        with pytest.raises(WaitTimeout):
            seen.extend(job.events(timeout=3.5))
    assert time.monotonic() - started >= 3.5
    assert [event["status"] for event in seen] == ["queued"]


class _NoStreams(httpx.HTTPTransport):
    """The network of a proxy that drops every events stream and passes the rest."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            raise httpx.ConnectError("the proxy dropped the stream", request=request)
        return super().handle_request(request)


def test_the_progress_bar_falls_back_to_polling_when_the_stream_fails(
    api_base: str, clean_redis: Any
) -> None:
    """EventsProgress long-polls the job once its stream cannot be had, and still sees the end."""
    client = Client(api_base, KEY, transport=_NoStreams())
    job = client.submit_csv("breast-cancer", breast_cancer_csv(10_000))
    source = EventsProgress(job, timeout=60)
    seen = [view.status for view in source]
    assert seen[-1] == "succeeded"
    assert isinstance(source.failure, ServiceUnreachable)
    client.close()
