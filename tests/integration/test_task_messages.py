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
from shared.tasks import PREDICT, PUBLISH, SHADOW, ChunkMessage, PublishMessage, ShadowMessage

QUEUE = "messages-test"
CHUNKS = [
    ChunkMessage(job="a" * 32, model="iris", version="1.0.0", chunk=0, inputs=[[5.1, 3.5, 1.4, 0.2]]),
    ChunkMessage(job="b" * 32, model="iris", version="1.0.0", chunk=2, inputs=None),
]
SHADOWED = [
    ShadowMessage(
        job="c" * 32, model="iris", version="1.0.0", shadow="1.1.0", chunk=0, inputs=[[1.0, 2.0, 3.0, 4.0]]
    )
]
# Fields that differ between any two messages (fresh ids) or name the sending process.
_FRESH_HEADERS = {"id", "root_id", "origin"}
_FRESH_PROPERTIES = {"correlation_id", "delivery_tag"}


def _popped(client: redis.Redis, last: bool = False) -> dict[str, Any]:
    raw = client.lpop(QUEUE) if last else client.rpop(QUEUE)  # workers take the oldest, on the right
    assert raw is not None
    found: dict[str, Any] = json.loads(raw)
    return found


def _assert_same(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Check envelope, headers, properties and body match but for the fields fresh in every message."""
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


def test_a_pushed_message_is_the_one_send_task_pushes(redis_url: str, clean_redis: redis.Redis) -> None:
    """Envelope, headers, properties and body match Celery's own message but for fresh ids."""
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    celery = make_celery(settings)
    argsrepr = repr([CHUNKS[0]["job"], f"{CHUNKS[1]['job']} chunk 2"])
    celery.send_task(PREDICT, args=[CHUNKS], argsrepr=argsrepr, queue=QUEUE, retry=False)
    TaskSender(celery, QUEUE, connect(settings)).chunks(CHUNKS)
    _assert_same(ours=_popped(clean_redis, last=True), theirs=_popped(clean_redis))


def test_shadow_and_publish_messages_are_the_ones_send_task_pushes(
    redis_url: str, clean_redis: redis.Redis
) -> None:
    """The worker's shadow predictions and the API's publish jobs travel in Celery's own message too."""
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    celery = make_celery(settings)
    sender = TaskSender(celery, QUEUE, connect(settings))
    published = PublishMessage(job="d" * 32, model="iris", version="2.0.0")
    celery.send_task(SHADOW, args=[SHADOWED], queue=QUEUE, retry=False)
    sender.shadows(SHADOWED)
    _assert_same(ours=_popped(clean_redis, last=True), theirs=_popped(clean_redis))
    celery.send_task(PUBLISH, args=[published], queue=QUEUE, retry=False)
    sender.publish(published)
    _assert_same(ours=_popped(clean_redis, last=True), theirs=_popped(clean_redis))


def test_each_chunk_is_its_own_message_in_order(redis_url: str, clean_redis: redis.Redis) -> None:
    """A bulk job's chunks are sent one a message, in one round trip, oldest first for the workers."""
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    TaskSender(make_celery(settings), QUEUE, connect(settings)).each_chunk(CHUNKS)
    sent = [json.loads(base64.b64decode(_popped(clean_redis)["body"]))[0][0] for _ in CHUNKS]
    assert sent == [[chunk] for chunk in CHUNKS]
    assert clean_redis.llen(QUEUE) == 0


def test_the_broker_channel_receives_and_acknowledges_with_one_client(
    redis_url: str, clean_redis: redis.Redis
) -> None:
    """A message is held and acknowledged through the channel's one client, made anew with a new pool."""
    settings = Settings(redis_url=redis_url, queue_name=QUEUE)
    celery = make_celery(settings)
    TaskSender(celery, QUEUE, connect(settings)).chunks(CHUNKS)
    with celery.connection_for_read() as connection:
        queue = connection.SimpleQueue(QUEUE, no_ack=False)
        channel = queue.channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        message = queue.get(timeout=5)
        tag = message.delivery_tag
        assert clean_redis.hexists("unacked", tag)  # held, as a worker holds a message it runs
        message.ack()
        assert not clean_redis.hexists("unacked", tag)
        channel._disconnect_pools()  # what kombu does after a fork: the held client goes with the pool
        with channel.conn_or_acquire() as third:
            assert third is not first
            assert third.connection_pool is channel.pool
            assert third.ping()
        queue.close()
