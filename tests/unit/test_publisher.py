"""The coalescing publisher: overlapping requests share one message, and failures reach each of them."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.publisher import CoalescingPublisher
from shared.tasks import ChunkMessage


def _message(index: int) -> ChunkMessage:
    return ChunkMessage(job=f"{index:032x}", model="iris", version="1.0.0", chunk=0, inputs=[[1, 2, 3, 4]])


def test_a_lone_request_is_sent_at_once_and_alone() -> None:
    """With nothing else in flight, a request's message is sent immediately in its own call."""
    sent: list[list[str]] = []
    publisher = CoalescingPublisher(lambda batch: sent.append([m["job"] for m in batch]), max_batch=8)
    publisher.publish([_message(1)])
    publisher.publish([_message(2)])
    assert sent == [[_message(1)["job"]], [_message(2)["job"]]]


def test_overlapping_requests_are_sent_together_each_exactly_once() -> None:
    """Requests arriving during a slow send are coalesced, every message sent once, batches capped."""
    sent: list[list[str]] = []
    lock = threading.Lock()

    def slow_send(batch: Sequence[ChunkMessage]) -> None:
        time.sleep(0.02)
        with lock:
            sent.append([m["job"] for m in batch])

    publisher = CoalescingPublisher(slow_send, max_batch=10)
    with ThreadPoolExecutor(max_workers=40) as pool:
        list(pool.map(lambda i: publisher.publish([_message(i)]), range(200)))
    flat = [job for batch in sent for job in batch]
    assert sorted(flat) == sorted(_message(i)["job"] for i in range(200))
    assert max(len(batch) for batch in sent) <= 10
    assert len(sent) < 100  # coalesced: far fewer sends than requests


def test_a_failed_send_raises_in_every_request_of_its_batch_and_the_next_recover() -> None:
    """When the broker refuses a batch, each of its requests raises; later requests go through."""
    calls = {"n": 0}
    started = threading.Event()
    release = threading.Event()

    def send(batch: Sequence[ChunkMessage]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            started.set()
            release.wait(2)
            return
        if calls["n"] == 2:
            raise ConnectionError("broker away")

    publisher = CoalescingPublisher(send, max_batch=10)
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(publisher.publish, [_message(0)])
        started.wait(2)
        waiting = [pool.submit(publisher.publish, [_message(i)]) for i in (1, 2, 3)]
        time.sleep(0.05)
        release.set()
        first.result()
        for future in waiting:
            with pytest.raises(ConnectionError):
                future.result()
    publisher.publish([_message(4)])
    assert calls["n"] == 3
