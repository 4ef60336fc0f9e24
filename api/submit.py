"""Accepting a job: write its record, then publish its chunks; undo the record if publishing fails."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import redis
from celery import Celery
from kombu import Producer
from kombu.exceptions import OperationalError

from api.services import Services
from shared.errors import Conflict, QueueFull, RateLimited, Unavailable
from shared.registry import Manifest
from shared.store import NewJob
from shared.tasks import PREDICT, ChunkMessage

Records = list[Any] | npt.NDArray[np.float32]


def _publish_again(svc: Services, job_id: str) -> None:
    """Publish the unfinished chunks of a job a retry found, in case the first request died first.

    Workers claim each chunk once, so a chunk that was in the queue all along is predicted once.
    """
    record = svc.store.get(job_id)
    if record is None or record.terminal:
        return
    messages = [
        ChunkMessage(job=job_id, model=record.model, version=record.version, chunk=chunk, inputs=None)
        for chunk in svc.store.pending_chunks(job_id)
    ]
    if messages:
        with svc.celery.producer_or_acquire() as producer:
            for message in messages:
                send_messages(svc.celery, svc.settings.queue_name, [message], producer)


def send_messages(
    celery: Celery, queue: str, messages: Sequence[ChunkMessage], producer: Producer | None = None
) -> None:
    """Publish one task message carrying the chunk messages, failing at once if the broker is away."""
    celery.send_task(PREDICT, args=[list(messages)], queue=queue, producer=producer, retry=False)


def idempotency(key: str | None, model: str, body: bytes) -> tuple[str, str] | None:
    """Return the hashed Idempotency-Key and body digest, or None when no key was sent."""
    if not key:
        return None
    key_hash = hashlib.sha256(key.encode()).hexdigest()[:32]
    body_hash = hashlib.sha256(model.encode() + b"\0" + body).hexdigest()[:32]
    return key_hash, body_hash


def chunk_messages(job_id: str, manifest: Manifest, rows: Records, size: int) -> list[ChunkMessage]:
    """Split a job's rows into chunk messages; only a single-chunk job carries its rows along."""
    starts = range(0, len(rows), size)
    inline = len(starts) == 1
    return [
        ChunkMessage(
            job=job_id,
            model=manifest.name,
            version=manifest.version,
            chunk=index,
            inputs=_as_list(rows[start : start + size]) if inline else None,
        )
        for index, start in enumerate(starts)
    ]


def _as_list(rows: Records) -> list[Any]:
    return rows.tolist() if isinstance(rows, np.ndarray) else list(rows)


def _stored_chunks(rows: Records, size: int) -> Iterator[bytes]:
    for start in range(0, len(rows), size):
        yield orjson.dumps(rows[start : start + size], option=orjson.OPT_SERIALIZE_NUMPY)


def submit_job(
    svc: Services,
    owner: str,
    manifest: Manifest,
    rows: Records,
    deadline_s: float | None,
    idem: tuple[str, str] | None,
) -> tuple[str, bool]:
    """Create and publish a job, or find the one its Idempotency-Key made; return (id, created)."""
    size = svc.settings.chunk_size
    chunks = (len(rows) + size - 1) // size
    new = NewJob(
        owner=owner,
        model=manifest.name,
        version=manifest.version,
        total=len(rows),
        chunks=chunks,
        deadline_at=time.time() + deadline_s if deadline_s else None,
    )
    limits = svc.settings
    # An idempotent job keeps its inputs in the store too, so a retry can publish it again.
    kept = orjson.dumps(_as_list(rows)) if idem and chunks == 1 else b""
    outcome, job_id = svc.store.create(new, idem, limits.max_queued_per_model, limits.rate_limit_per_s, kept)
    if outcome == "rate_limited":
        raise RateLimited(
            f"This API key may submit {limits.rate_limit_per_s} jobs a second.",
            [{"field": "Authorization", "reason": "rate limit reached"}],
            retry_after=1,
        )
    if outcome == "queue_full":
        raise QueueFull(
            f"Model {manifest.name} has {limits.max_queued_per_model} jobs waiting; try again shortly.",
            [{"field": "model", "reason": "queue full"}],
            retry_after=limits.queue_full_retry_s,
        )
    if outcome == "conflict":
        raise Conflict(
            "This Idempotency-Key was used with another body.",
            [{"field": "Idempotency-Key", "reason": f"already created job {job_id}"}],
        )
    if outcome == "existing":
        _publish_again(svc, job_id)
        return job_id, False
    try:
        if chunks > 1:
            svc.store.put_inputs(job_id, _stored_chunks(rows, size))
        messages = chunk_messages(job_id, manifest, rows, size)
        if len(messages) == 1:
            svc.publisher.publish(messages)
        else:  # one message a chunk, so the chunks spread over every worker
            with svc.celery.producer_or_acquire() as producer:
                for message in messages:
                    send_messages(svc.celery, svc.settings.queue_name, [message], producer)
    except (OperationalError, redis.RedisError) as exc:
        svc.store.discard(job_id, owner, manifest.name, idem[0] if idem else None)
        raise Unavailable("The broker cannot be reached; nothing was accepted.") from exc
    except Exception:
        svc.store.discard(job_id, owner, manifest.name, idem[0] if idem else None)
        raise
    svc.metrics.jobs.labels(manifest.name).inc()
    svc.metrics.records.labels(manifest.name).inc(len(rows))
    return job_id, True
