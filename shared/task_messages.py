"""Task messages built with Celery's protocol and pushed by the caller's own Redis client.

Celery's send_task spends about a millisecond of CPU a message on work a fixed queue never needs
(a Redis client made per message, the exchange declared again, routing looked up); the message it
pushes is a JSON envelope on the queue's list. This builds the same envelope (the task message of
Celery's protocol 2, its body as JSON, base64 as kombu's Redis transport sends it) and pushes it
with the store's own client, so a worker receives what send_task would have sent.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import redis
from celery import Celery

from shared.tasks import PREDICT, PUBLISH, SHADOW, ChunkMessage, PublishMessage, ShadowMessage


class TaskSender:
    """Sends the service's task messages onto one queue through a Redis client, raising if Redis is away."""

    def __init__(self, celery: Celery, queue: str, client: redis.Redis) -> None:
        self._amqp = celery.amqp
        self._reply_to = celery.thread_oid
        self._queue = queue
        self._client = client

    def chunks(self, messages: Sequence[ChunkMessage]) -> None:
        """Send one task message carrying the chunk messages (several small jobs travel together)."""
        self._client.lpush(self._queue, self._predict(messages))

    def each_chunk(self, messages: Sequence[ChunkMessage]) -> None:
        """Send a task message for each chunk message in one round trip, so a bulk job spreads out."""
        if messages:
            self._client.lpush(self._queue, *(self._predict([message]) for message in messages))

    def publish(self, message: PublishMessage) -> None:
        """Send a publish job's one task message."""
        self._client.lpush(self._queue, self.encode(PUBLISH, [message]))

    def shadows(self, messages: Sequence[ShadowMessage]) -> None:
        """Send one task message carrying records a shadow version predicts too."""
        self._client.lpush(self._queue, self.encode(SHADOW, [list(messages)]))

    def _predict(self, messages: Sequence[ChunkMessage]) -> bytes:
        # What Flower shows as the task's arguments (and searches): the job ids, never cut short,
        # where Celery's own rendering of the inputs stops at 1 KiB, after the first few jobs.
        return self.encode(PREDICT, [list(messages)], repr([_chunk_name(m) for m in messages]))

    def encode(self, task: str, args: Sequence[Any], argsrepr: str | None = None) -> bytes:
        """Return the JSON envelope kombu's Redis transport would push for send_task(task, args)."""
        task_id = str(uuid.uuid4())
        # ignore_result None, not False, as send_task leaves it when not told (the app's default rules);
        # args a list, as send_task passes them, so Flower shows the same argsrepr; celery-types
        # declares ignore_result bool and args a tuple.
        message = self._amqp.as_task_v2(
            task_id, task, args=list(args), argsrepr=argsrepr, reply_to=self._reply_to,  # type: ignore[arg-type]
            ignore_result=None,  # type: ignore[arg-type]
        )  # fmt: skip
        # orjson writes the JSON kombu's serializer writes, without its spaces, at a fraction of the cost.
        body = orjson.dumps(message.body)
        properties = {
            **message.properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": self._queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        }
        envelope = {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": message.headers,
            "properties": properties,
        }
        return orjson.dumps(envelope)


def _chunk_name(message: ChunkMessage) -> str:
    job, chunk = message["job"], message["chunk"]
    return f"{job} chunk {chunk}" if chunk else job
