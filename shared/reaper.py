"""The reaper: publishes again the chunks of unfinished jobs whose messages were lost.

kombu's Redis transport takes a message off the queue (``BRPOP``) before it records it as held
(the ``unacked`` hash); a worker killed in between, or an API killed between writing a job and
publishing it, leaves an accepted job with no message anywhere. The job store knows every
unfinished job and keeps its inputs until they are predicted, so the reaper can tell such a job
(no worker holds its message, and the queue is empty or has moved past it: it is first in, first
out) and publish it again. Redelivery is harmless: workers claim a job once and record each
chunk's outputs once. A publish job's one input chunk is its message, sent again to the publish
task (the job record's ``kind`` says which).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis

from shared.store import FAILED, PUBLISH_KIND, QUEUED, TERMINAL, JobStore
from shared.tasks import ChunkMessage, PublishMessage

log = logging.getLogger(__name__)

# kombu's hash of the messages workers hold (its transport option unacked_key).
UNACKED = "unacked"
# How far apart the publish times of two jobs written at the same moment may land.
SKEW_S = 1.0

Send = Callable[[Sequence[ChunkMessage]], None]
SendPublish = Callable[[PublishMessage], None]


def held_chunks(client: redis.Redis, queue: str) -> set[tuple[str, int]]:
    """Return the (job, chunk) pairs carried by the messages of the queue that workers hold now."""
    held: set[tuple[str, int]] = set()
    for raw in client.hvals(UNACKED):
        try:
            payload, _exchange, routing_key = orjson.loads(raw)
            if routing_key != queue:
                continue
            body: Any = payload["body"]
            if payload["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            carried = orjson.loads(body)[0][0]
            # A predict task carries a list of chunk messages; a publish task one message, its chunk 0.
            for message in [carried] if isinstance(carried, dict) else carried:
                held.add((message["job"], int(message.get("chunk", 0))))
        except (ValueError, KeyError, TypeError, IndexError):  # not a message of this service
            continue
    return held


def _batches(messages: list[ChunkMessage], size: int = 64) -> list[list[ChunkMessage]]:
    """Return the messages to send: small jobs together, a bulk job's chunks one a message."""
    multi = {m["job"] for m in messages if m["chunk"] > 0}
    small = [m for m in messages if m["job"] not in multi]
    alone = [[m] for m in messages if m["job"] in multi]
    return [small[i : i + size] for i in range(0, len(small), size)] + alone


class Reaper:
    """Finds unfinished jobs whose messages are nowhere and publishes their pending chunks again."""

    def __init__(
        self,
        store: JobStore,
        send: Send,
        redelivery_s: float,
        *,
        send_publish: SendPublish,
        batch: int = 1_000,
    ) -> None:
        self.store = store
        self.send = send
        self.send_publish = send_publish
        # A job is looked at once it has waited half the bound; passes come every quarter of it.
        self.grace_s = redelivery_s / 2
        self.interval_s = redelivery_s / 4
        self.batch = batch

    def run_once(self, now: float | None = None) -> list[str]:
        """Publish again the chunks of every job found lost in one pass; return those jobs' ids."""
        now = time.time() if now is None else now
        stale = self.store.stale(now - self.grace_s, self.batch)
        if not stale:
            return []
        length, mark = self.store.delivery_mark()
        held = held_chunks(self.store.client, self.store.queue)
        held_jobs = {job_id for job_id, _ in held}
        states = self.store.undelivered([job_id for job_id, _ in stale])
        gone: list[str] = []
        lost: list[str] = []
        messages: list[ChunkMessage] = []
        publishes: list[PublishMessage] = []
        for (job_id, sent), (status, model, version, chunks, kind) in zip(stale, states, strict=True):
            if status is None or status in TERMINAL or model is None or version is None:
                gone.append(job_id)
                continue
            if length and mark <= sent + SKEW_S:
                continue  # its message may still be waiting its turn in the queue
            missing = [chunk for chunk in chunks if (job_id, chunk) not in held]
            if missing and kind == PUBLISH_KIND:
                lost.append(job_id)  # its one waiting chunk is its message
                publishes.append(PublishMessage(job=job_id, model=model, version=version))
            elif missing:
                lost.append(job_id)
                messages += [
                    ChunkMessage(job=job_id, model=model, version=version, chunk=chunk, inputs=None)
                    for chunk in missing
                ]
            elif not chunks and status == QUEUED and job_id not in held_jobs:
                # Written by a version that kept no inputs: it cannot run, so it ends with the reason.
                self.store.end(
                    job_id, model, FAILED, "lost",
                    "The job's message was lost before a worker took it; submit it again.",
                )  # fmt: skip
        self.store.forget_pending(gone)
        for batch in _batches(messages):
            self.send(batch)
        for publish in publishes:
            self.send_publish(publish)
        if lost:
            self.store.mark_published(lost, now)
            log.warning(
                "published again %d chunk(s) of %d job(s) whose messages were lost",
                len(messages) + len(publishes),
                len(lost),
            )
        return lost

    def run_forever(self, stop: threading.Event) -> None:
        """Run a pass every interval, one process at a time across the deployment, until stop is set."""
        lock = f"reaper:{self.store.queue}"
        while not stop.wait(self.interval_s):
            try:
                if self.store.client.set(lock, "1", nx=True, px=max(1, int(self.interval_s * 900))):
                    self.run_once()
            except Exception:  # Redis away or a message refused: the next pass tries again
                log.exception("reaper pass failed")

    def start(self) -> threading.Event:
        """Start passes in a daemon thread; set the returned event to stop them."""
        stop = threading.Event()
        threading.Thread(target=self.run_forever, args=(stop,), name="reaper", daemon=True).start()
        return stop
