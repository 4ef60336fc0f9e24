"""Task messages built with Celery's and kombu's own serializers, pushed by the caller's Redis client.

Celery's send_task spends about a millisecond of CPU a message on work a fixed queue never needs
(a Redis client made per message, the exchange declared again, routing looked up); the message it
pushes is a JSON envelope on the queue's list. This builds the same envelope (the task message from
Celery's protocol 2, its body serialized by kombu, base64 as kombu's Redis transport sends it) and
pushes it with the store's own client, so a worker receives exactly what send_task would have sent.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery
from kombu import serialization
from kombu.utils.json import dumps

from shared.tasks import PREDICT, PUBLISH, ChunkMessage, PublishMessage


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

    def _predict(self, messages: Sequence[ChunkMessage]) -> str:
        # What Flower shows as the task's arguments (and searches): the job ids, never cut short,
        # where Celery's own rendering of the inputs stops at 1 KiB, after the first few jobs.
        return self.encode(PREDICT, [list(messages)], repr([_chunk_name(m) for m in messages]))

    def encode(self, task: str, args: Sequence[Any], argsrepr: str | None = None) -> str:
        """Return the JSON envelope kombu's Redis transport would push for send_task(task, args)."""
        task_id = str(uuid.uuid4())
        # ignore_result None, not False, as send_task leaves it when not told (the app's default rules);
        # celery-types declares it bool.
        message = self._amqp.as_task_v2(
            task_id, task, args=tuple(args), argsrepr=argsrepr, reply_to=self._reply_to,
            ignore_result=None,  # type: ignore[arg-type]
        )  # fmt: skip
        content_type, encoding, body = serialization.dumps(message.body, serializer="json")
        properties = {
            **message.properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": self._queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        }
        envelope = {
            "body": base64.b64encode(body.encode() if isinstance(body, str) else body).decode(),
            "content-encoding": encoding,
            "content-type": content_type,
            "headers": message.headers,
            "properties": properties,
        }
        return str(dumps(envelope))


def _chunk_name(message: ChunkMessage) -> str:
    job, chunk = message["job"], message["chunk"]
    return f"{job} chunk {chunk}" if chunk else job
