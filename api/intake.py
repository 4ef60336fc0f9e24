"""Accepting a job, the one door for JSON bodies and CSV streams: parse, validate, keep, write, publish.

A job is accepted once its record is written: its inputs are in the store with it, so a message
that is lost afterwards (a failed publish, an API or worker killed) is published again by the
reaper. A failure before that leaves nothing; a failure whose outcome cannot be known says so.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
import redis

from api.bodies import Readable
from api.csv_input import csv_chunks
from api.services import Services
from api.validation import parse_json, parse_submit, validate_records
from api.webhooks import URL_HEADER, WebhookBody, subscription
from shared.chunks import Records, encode_records
from shared.errors import Conflict, MaybeAccepted, QueueFull, RateLimited, Unavailable
from shared.redis_connect import sentinel_mode
from shared.registry import Manifest
from shared.store import PREDICT_KIND, PUBLISH_KIND, QUEUED, Created, JobRecord, NewJob, never_sent
from shared.tasks import ChunkMessage, PublishMessage

log = logging.getLogger(__name__)


def body_digest(model: str) -> hashlib._Hash:
    """Return the digest an Idempotency-Key's body is compared by, started with the model's name."""
    return hashlib.sha256(model.encode() + b"\0")


def idempotency(key: str | None, digest: hashlib._Hash) -> tuple[str, str] | None:
    """Return the hashed Idempotency-Key and body digest, or None when no key was sent."""
    if not key:
        return None
    return hashlib.sha256(key.encode()).hexdigest()[:32], digest.hexdigest()[:32]


@dataclass(frozen=True)
class Submission:
    """Who submits what: the owner, the model version, the new job's id and its options.

    shadow names the version that also predicts a routed job's records, when routing drew it.
    """

    owner: str
    manifest: Manifest
    job_id: str
    deadline_s: float | None = None
    idempotency: tuple[str, str] | None = None
    shadow: str | None = None
    # The webhook as the job keeps it (JSON), when the submission named one.
    webhook: str | None = None


@dataclass(frozen=True)
class Accepted:
    """The accepted job's record; created is False when an Idempotency-Key found an earlier job."""

    record: JobRecord
    created: bool


def accept_json(
    svc: Services, owner: str, name: str, job_id: str, body: Readable, key: str | None
) -> Accepted:
    """Accept a JSON submission: parse it, validate its records against its version, accept.

    The version is the one the body names, else the one the model's routing draws.
    """
    digest = body_digest(name)
    raw = body.read()
    digest.update(raw)
    submitted = parse_submit(parse_json(raw))
    hook = subscription(svc.settings, submitted.webhook, "webhook.url")
    routed = submitted.version is None
    manifest = svc.registry.get(name, svc.routing.choose(name) if routed else submitted.version)
    rows = validate_records(manifest, submitted.inputs, svc.settings.max_records)
    shadow = svc.routing.shadow(name) if routed else None
    sub = Submission(owner, manifest, job_id, submitted.deadline_s, idempotency(key, digest), shadow, hook)
    return accept_rows(svc, sub, rows)


def accept_csv(
    svc: Services, owner: str, manifest: Manifest, job_id: str, body: Readable, key: str | None,
    webhook: WebhookBody | None = None,
) -> Accepted:  # fmt: skip
    """Accept a CSV submission, read, validated and kept block by block as it arrives."""
    digest = body_digest(manifest.name)
    hook = subscription(svc.settings, webhook, URL_HEADER)  # checked before the body is read
    if hook is not None:
        digest.update(hook.encode() + b"\0")  # the same rows sent with another webhook are another job
    limits = svc.settings
    # Without an Idempotency-Key the digest is never compared, so the body is not hashed.
    batches = csv_chunks(body, manifest, limits.chunk_size, limits.max_records, digest if key else None)
    # The digest is complete only once the whole body was read, so the key is hashed after it.
    sub = Submission(owner, manifest, job_id, webhook=hook)
    return accept_stream(svc, sub, batches, lambda: idempotency(key, digest))


def accept_rows(svc: Services, sub: Submission, rows: Records) -> Accepted:
    """Accept a job whose validated records are all at hand."""
    size = svc.settings.chunk_size
    if len(rows) <= size:
        # A small job's records travel in its message too, so a worker reads nothing more.
        inline = rows if isinstance(rows, list) else rows.tolist()
        return _accept(svc, sub, len(rows), 1, encode_records(sub.manifest, rows), inline)
    return accept_stream(svc, sub, (rows[start : start + size] for start in range(0, len(rows), size)))


def accept_stream(
    svc: Services, sub: Submission, batches: Iterable[Records],
    idempotent: Callable[[], tuple[str, str] | None] | None = None,
) -> Accepted:  # fmt: skip
    """Accept a bulk job from its validated batches of records, each kept in the store as it comes.

    idempotent, when given, returns the submission's idempotency once the whole body was read.
    """
    svc.capacity.check()
    total = chunks = stored = 0
    try:
        for records in batches:
            encoded = encode_records(sub.manifest, records)
            svc.store.put_inputs(sub.job_id, {chunks: encoded})
            total += len(records)
            chunks += 1
            stored += len(encoded)
    except BaseException:  # a bad row, a cut upload: nothing is accepted, so nothing is kept
        _drop_inputs(svc, sub.job_id)
        raise
    if idempotent is not None:
        sub = dataclasses.replace(sub, idempotency=idempotent())
    return _accept(svc, sub, total, chunks, stored=stored)


def _drop_inputs(svc: Services, job_id: str) -> None:
    try:
        svc.store.drop_inputs(job_id)
    except redis.RedisError:  # they expire with the job's lifetime
        log.warning("could not drop the inputs of refused job %s", job_id)


def _accept(
    svc: Services, sub: Submission, total: int, chunks: int, inputs: bytes = b"",
    inline: list[object] | None = None, stored: int = 0,
) -> Accepted:  # fmt: skip
    """Write the job's record unless a limit refuses it, then publish its chunks."""
    new = NewJob(
        id=sub.job_id, owner=sub.owner, model=sub.manifest.name, version=sub.manifest.version,
        total=total, chunks=chunks, deadline_at=time.time() + sub.deadline_s if sub.deadline_s else None,
        idempotency=sub.idempotency, webhook=sub.webhook,
    )  # fmt: skip
    messages = [
        ChunkMessage(job=new.id, model=new.model, version=new.version, chunk=chunk, inputs=inline)
        for chunk in range(chunks)
    ]
    if sub.shadow is not None and inline is not None:  # a bulk job's chunks are never shadowed
        messages[0]["shadow"] = sub.shadow
    return _accept_new(svc, new, lambda: _publish(svc, messages), inputs, stored)


def accept_publish(svc: Services, owner: str, name: str, version: str, job_id: str) -> Accepted:
    """Accept a job publishing a model version whose upload is kept under the job's id."""
    message = PublishMessage(job=job_id, model=name, version=version)
    new = NewJob(id=job_id, owner=owner, model=name, version=version, total=1, chunks=1, kind=PUBLISH_KIND)
    # Its one input chunk is its message: the reaper sees it waiting and sends it again if it is lost.
    send = functools.partial(svc.sender.publish, message)
    return _accept_new(svc, new, send, orjson.dumps(message))


def _accept_new(
    svc: Services, new: NewJob, send: Callable[[], None], inputs: bytes = b"", stored: int = 0
) -> Accepted:
    """Write the job's record unless a limit refuses it, then send its messages."""
    try:
        svc.capacity.check()
        created = _create(svc, new, inputs, stored)
    except (QueueFull, Unavailable) as exc:
        if stored and not isinstance(exc, MaybeAccepted):
            _drop_inputs(svc, new.id)
        raise
    if created.outcome != "created" and stored:
        _drop_inputs(svc, new.id)  # chunks stored ahead of the record: refused, or a retry found its job
    if created.outcome == "existing":
        found = svc.store.get(created.id)
        if found is None:  # it ended and expired between the two reads: as if never found
            raise Unavailable("The job this Idempotency-Key created just expired; send it again.")
        return Accepted(found, False)
    if created.outcome != "created":
        _refuse(svc, new.model, created.outcome, created.id)
    if new.kind == PREDICT_KIND:
        svc.metrics.jobs.labels(new.model).inc()
        svc.metrics.records.labels(new.model).inc(new.total)
    try:
        send()
    except Exception as exc:  # accepted all the same: the reaper publishes what was lost
        log.warning("publishing job %s failed (%s); the reaper will publish it", new.id, exc)
    _confirm_replicated(svc, new)
    record = JobRecord(
        id=new.id, owner=new.owner, model=new.model, version=new.version, status=QUEUED,
        created_at=created.created_at, started_at=None, completed_at=None, total=new.total, done=0,
        chunks=new.chunks, predict_ms=0.0, kind=new.kind,
    )  # fmt: skip
    return Accepted(record, True)


def _confirm_replicated(svc: Services, new: NewJob) -> None:
    """Return once the job's record and message reached enough replicas (Sentinel mode), else say so."""
    try:
        if svc.store.replicas.confirm(f"job:{new.id}"):
            return
    except redis.RedisError as exc:
        log.warning("job %s: could not confirm it reached a replica (%s)", new.id, exc)
    retry = "retry with the same Idempotency-Key" if new.idempotency else "look it up"
    raise MaybeAccepted(
        f"Job {new.id} was written but no replica confirmed it in time, so a failover may lose it: "
        f"{retry} (GET /v1/jobs/{new.id}) before sending it again.",
        [{"field": "id", "reason": new.id}],
    )


def _publish(svc: Services, messages: list[ChunkMessage]) -> None:
    """Publish a small job with others submitted at the same moment, a bulk job one chunk a message."""
    if len(messages) == 1:
        svc.publisher.publish(messages)
        return
    svc.sender.each_chunk(messages)  # one message a chunk, so a bulk job spreads over every worker


def _create(svc: Services, new: NewJob, inputs: bytes, stored: int) -> Created:
    """Write the record, telling a refusal from a failure whose outcome is unknown."""
    try:
        return svc.store.create(new, inputs, stored)
    except redis.exceptions.OutOfMemoryError as exc:  # the script was refused whole: nothing written
        raise QueueFull(
            "The job store is full; nothing was accepted. Try again once older jobs expire.",
            [{"field": None, "reason": "job store full"}],
            retry_after=svc.settings.queue_full_retry_s,
        ) from exc
    except redis.RedisError as exc:
        # Retried over a failover (Sentinel mode), an earlier try may have reached Redis.
        if never_sent(exc) and not sentinel_mode(svc.settings):
            raise Unavailable("The job store cannot be reached; nothing was accepted.") from exc
        retry = "retry with the same Idempotency-Key" if new.idempotency else "look it up"
        raise MaybeAccepted(
            f"The job store stopped answering while job {new.id} was being written, so it may have "
            f"been accepted: {retry} (GET /v1/jobs/{new.id}) before sending it again.",
            [{"field": "id", "reason": new.id}],
        ) from exc


def _refuse(svc: Services, model: str, outcome: str, found: str) -> None:
    limits = svc.settings
    if outcome == "rate_limited":
        raise RateLimited(
            f"This API key may submit {limits.rate_limit_per_s} jobs a second.",
            [{"field": "Authorization", "reason": "rate limit reached"}],
            retry_after=1,
        )
    if outcome == "queue_full":
        raise QueueFull(
            f"Model {model} has {limits.max_queued_per_model} jobs waiting; try again shortly.",
            [{"field": "model", "reason": "queue full"}],
            retry_after=limits.queue_full_retry_s,
        )
    if outcome == "key_full":
        raise QueueFull(
            f"This API key has {limits.max_open_jobs_per_key} jobs queued or running; wait for some "
            "to end (or cancel them) before submitting more.",
            [{"field": "Authorization", "reason": "unfinished jobs per key reached"}],
            retry_after=limits.queue_full_retry_s,
        )
    if outcome == "storage_full":
        raise RateLimited(
            f"This API key's jobs hold {int(found):,} bytes of inputs and outputs in the store (the limit "
            f"is {limits.max_stored_bytes_per_key:,}); try again once older jobs expire, or submit less.",
            [{"field": "Authorization", "reason": "stored bytes per key reached"}],
            retry_after=svc.store.bucket_s,
        )
    if outcome == "conflict":
        raise Conflict(
            "This Idempotency-Key was used with another body.",
            [{"field": "Idempotency-Key", "reason": f"already created job {found}"}],
        )
    raise RuntimeError(f"unknown outcome of creating a job: {outcome}")
