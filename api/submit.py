"""Accepting a job: write its record, then publish its chunks; undo the record if publishing fails."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from api.services import Services
from shared.errors import Conflict, QueueFull, RateLimited, Unavailable
from shared.registry import Manifest
from shared.store import NewJob
from shared.tasks import PREDICT, ChunkMessage


def idempotency(key: str | None, model: str, body: bytes) -> tuple[str, str] | None:
    """Return the hashed Idempotency-Key and body digest, or None when no key was sent."""
    if not key:
        return None
    key_hash = hashlib.sha256(key.encode()).hexdigest()[:32]
    body_hash = hashlib.sha256(model.encode() + b"\0" + body).hexdigest()[:32]
    return key_hash, body_hash


def chunk_messages(job_id: str, manifest: Manifest, rows: list[Any], size: int) -> list[ChunkMessage]:
    """Split a job's rows into the chunk messages workers predict."""
    return [
        ChunkMessage(
            job=job_id,
            model=manifest.name,
            version=manifest.version,
            chunk=index,
            inputs=rows[start : start + size],
        )
        for index, start in enumerate(range(0, len(rows), size))
    ]


def submit_job(
    svc: Services,
    owner: str,
    manifest: Manifest,
    rows: list[Any],
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
    outcome, job_id = svc.store.create(new, idem, limits.max_queued_per_model, limits.rate_limit_per_s)
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
        return job_id, False
    try:
        with svc.celery.producer_or_acquire() as producer:
            for message in chunk_messages(job_id, manifest, rows, size):
                svc.celery.send_task(
                    PREDICT,
                    args=[[message]],
                    queue=svc.settings.queue_name,
                    producer=producer,
                    retry=False,
                )
    except Exception as exc:
        svc.store.discard(job_id, owner, manifest.name, idem[0] if idem else None)
        raise Unavailable("The broker cannot be reached; nothing was accepted.") from exc
    svc.metrics.jobs.labels(manifest.name).inc()
    svc.metrics.records.labels(manifest.name).inc(len(rows))
    return job_id, True
