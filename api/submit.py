"""Accepting a job: keep its inputs, write its record, publish its chunks; undo it all on failure."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence

import redis
from celery import Celery
from kombu import Producer
from kombu.exceptions import OperationalError

from api.services import Services
from shared.chunks import Records, encode_records
from shared.errors import Conflict, QueueFull, RateLimited, Unavailable
from shared.registry import Manifest
from shared.store import NewJob
from shared.tasks import PREDICT, ChunkMessage


def body_digest(model: str) -> hashlib._Hash:
    """Return the digest an Idempotency-Key's body is compared by, started with the model's name."""
    return hashlib.sha256(model.encode() + b"\0")


def idempotency(key: str | None, digest: hashlib._Hash) -> tuple[str, str] | None:
    """Return the hashed Idempotency-Key and body digest, or None when no key was sent."""
    if not key:
        return None
    return hashlib.sha256(key.encode()).hexdigest()[:32], digest.hexdigest()[:32]


def send_messages(
    celery: Celery, queue: str, messages: Sequence[ChunkMessage], producer: Producer | None = None
) -> None:
    """Publish one task message carrying the chunk messages, failing at once if the broker is away."""
    celery.send_task(PREDICT, args=[list(messages)], queue=queue, producer=producer, retry=False)


def _message(job_id: str, manifest: Manifest, chunk: int, inputs: list[object] | None) -> ChunkMessage:
    return ChunkMessage(job=job_id, model=manifest.name, version=manifest.version, chunk=chunk, inputs=inputs)


def _publish_chunks(svc: Services, job_id: str, manifest: Manifest, chunks: Iterable[int]) -> None:
    # One message a chunk, so a bulk job spreads over every worker.
    with svc.celery.producer_or_acquire() as producer:
        for chunk in chunks:
            send_messages(
                svc.celery, svc.settings.queue_name, [_message(job_id, manifest, chunk, None)], producer
            )


def submit_records(
    svc: Services, owner: str, manifest: Manifest, job_id: str, rows: Records, deadline_s: float | None,
    idem: tuple[str, str] | None,
) -> str:  # fmt: skip
    """Accept a job whose records are all at hand under job_id; return it, or the id a retry found."""
    size = svc.settings.chunk_size
    if len(rows) <= size:
        # A small job travels in its message; an idempotent one keeps its records too, for a retry.
        kept = encode_records(manifest, rows) if idem else b""
        job_id, created = _create(svc, owner, manifest, len(rows), 1, deadline_s, idem, kept, job_id)
        if created:
            inputs = rows if isinstance(rows, list) else rows.tolist()
            message = _message(job_id, manifest, 0, inputs)
            _guarded(svc, job_id, owner, manifest, idem, lambda: svc.publisher.publish([message]))
        return job_id
    chunks = [rows[start : start + size] for start in range(0, len(rows), size)]
    svc.store.put_inputs(job_id, {i: encode_records(manifest, chunk) for i, chunk in enumerate(chunks)})
    return submit_stored(svc, owner, manifest, job_id, len(rows), len(chunks), deadline_s, idem)


def submit_stored(
    svc: Services, owner: str, manifest: Manifest, job_id: str, total: int, chunks: int,
    deadline_s: float | None, idem: tuple[str, str] | None,
) -> str:  # fmt: skip
    """Accept a bulk job whose input chunks are already stored under job_id; return its id."""
    found, created = _create(svc, owner, manifest, total, chunks, deadline_s, idem, b"", job_id)
    if created:
        _guarded(
            svc, job_id, owner, manifest, idem, lambda: _publish_chunks(svc, job_id, manifest, range(chunks))
        )
    return found


def _create(
    svc: Services, owner: str, manifest: Manifest, total: int, chunks: int, deadline_s: float | None,
    idem: tuple[str, str] | None, kept: bytes, job_id: str,
) -> tuple[str, bool]:  # fmt: skip
    """Write the job record; return (id, True), or (the id of the job a retry found, False)."""
    limits = svc.settings
    new = NewJob(
        owner=owner, model=manifest.name, version=manifest.version, total=total, chunks=chunks,
        deadline_at=time.time() + deadline_s if deadline_s else None,
    )  # fmt: skip
    outcome, found = svc.store.create(
        new, idem, limits.max_queued_per_model, limits.rate_limit_per_s, kept, job_id
    )
    if outcome != "created" and chunks > 1:
        svc.store.drop_inputs(job_id)
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
            [{"field": "Idempotency-Key", "reason": f"already created job {found}"}],
        )
    if outcome == "existing":
        _publish_again(svc, found, manifest)
        return found, False
    svc.metrics.jobs.labels(manifest.name).inc()
    svc.metrics.records.labels(manifest.name).inc(total)
    return found, True


def _guarded(
    svc: Services, job_id: str, owner: str, manifest: Manifest, idem: tuple[str, str] | None,
    publish: Callable[[], None],
) -> None:  # fmt: skip
    """Publish, and if that fails take the job back so that nothing was accepted."""
    try:
        publish()
    except Exception as exc:
        svc.store.discard(job_id, owner, manifest.name, idem[0] if idem else None)
        if isinstance(exc, OperationalError | redis.RedisError):
            raise Unavailable("The broker cannot be reached; nothing was accepted.") from exc
        raise


def _publish_again(svc: Services, job_id: str, manifest: Manifest) -> None:
    """Publish the unfinished chunks of a job a retry found, in case the first request died first.

    Workers claim each chunk once, so a chunk that was in the queue all along is predicted once.
    """
    record = svc.store.get(job_id)
    if record is not None and not record.terminal:
        _publish_chunks(svc, job_id, manifest, svc.store.pending_chunks(job_id))
