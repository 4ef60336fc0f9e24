"""The task messages the service pushes itself are the ones Celery's send_task would have pushed."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis

from shared.celery_app import make_celery
from shared.settings import Settings
from shared.store import connect
from shared.task_messages import TaskSender
from shared.tasks import PREDICT, ChunkMessage

QUEUE = "messages-test"
CHUNKS = [
    ChunkMessage(job="a" * 32, model="iris", version="1.0.0", chunk=0, inputs=[[5.1, 3.5, 1.4, 0.2]]),
    ChunkMessage(job="b" * 32, model="iris", version="1.0.0", chunk=2, inputs=None),
]
# Fields that differ between any two messages (fresh ids) or name the sending process.
_FRESH_HEADERS = {"id", "root_id", "origin"}
_FRESH_PROPERTIES = {"correlation_id", "delivery_tag"}


def _popped(client: redis.Redis) -> dict[str, Any]:
    raw = client.rpop(QUEUE)  # workers take from the right: the oldest message first
    assert raw is not None
    found: dict[str, Any] = json.loads(raw)
    return found


def test_a_pushed_message_is_the_one_send_task_pushes(redis_url: str, clean_redis: redis.Redis) -> None:
    """Envelope, headers, properties and body match Celery's own message but for fresh ids."""
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    celery = make_celery(settings)
    argsrepr = repr([CHUNKS[0]["job"], f"{CHUNKS[1]['job']} chunk 2"])
    celery.send_task(PREDICT, args=[CHUNKS], argsrepr=argsrepr, queue=QUEUE, retry=False)
    TaskSender(celery, QUEUE, connect(settings)).chunks(CHUNKS)
    theirs, ours = _popped(clean_redis), _popped(clean_redis)
    assert set(ours) == set(theirs)
    assert {k: v for k, v in ours["headers"].items() if k not in _FRESH_HEADERS} == {
        k: v for k, v in theirs["headers"].items() if k not in _FRESH_HEADERS
    }
    assert ours["headers"]["root_id"] == ours["headers"]["id"] == ours["properties"]["correlation_id"]
    mine = {k: v for k, v in ours["properties"].items() if k not in _FRESH_PROPERTIES}
    celerys = {k: v for k, v in theirs["properties"].items() if k not in _FRESH_PROPERTIES}
    celerys.pop("argsrepr", None)  # send_task copies its unknown options into the properties too
    assert mine == celerys
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(base64.b64decode(theirs["body"]))


def test_each_chunk_is_its_own_message_in_order(redis_url: str, clean_redis: redis.Redis) -> None:
    """A bulk job's chunks are sent one a message, in one round trip, oldest first for the workers."""
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    TaskSender(make_celery(settings), QUEUE, connect(settings)).each_chunk(CHUNKS)
    sent = [json.loads(base64.b64decode(_popped(clean_redis)["body"]))[0][0] for _ in CHUNKS]
    assert sent == [[chunk] for chunk in CHUNKS]
    assert clean_redis.llen(QUEUE) == 0
