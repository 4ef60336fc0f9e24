"""The job store in Redis: job records, their inputs and outputs, the per-key indexes and the state machine.

Keys (an unfinished job's live up to its lifetime, a finished one's for the retention):
``job:{id}`` a hash of the record; ``job:{id}:out`` a hash of NDJSON output chunks by index;
``job:{id}:in`` the job's input chunks until they are predicted (every job's, so a lost message can
be published again); ``jobs:{owner}`` a sorted set of the owner's job ids (ids sort by creation
time) and ``open:{owner}`` of its unfinished ones; ``idem:{owner}:{key}`` the job an
Idempotency-Key created; ``queued:{model}`` a sorted set of the model's queued jobs, which bounds
its queue; ``rate:{owner}:{second}`` submissions in a second; ``bytes:{owner}:{bucket}`` bytes
stored by the owner; ``pending:{queue}`` and ``claimed:{queue}`` what the reaper reads.
Finished jobs are announced on the channel ``jobs:done``; while ``followed:{id}`` exists (an events
stream watches the job), its start and progress are announced on ``jobs:changed``. Every transition
is one Lua script (``store_scripts``), so it is atomic.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

import orjson
import redis
from redis.commands.core import Script

from shared import store_scripts as scripts
from shared.redis_connect import ReplicaWait, connect_redis, replicas_to_wait
from shared.settings import Settings
from shared.watch import WATCH_CHUNKS, ChunkWatch, watch_call


class JobStatus(StrEnum):
    """The states of a job: queued and running are unfinished, the other four final."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"


QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED, EXPIRED = (
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELED,
    JobStatus.EXPIRED,
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED, EXPIRED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED, EXPIRED})
DONE_CHANNEL = "jobs:done"
CHANGED_CHANNEL = "jobs:changed"
# The kinds of job: predicting records (what a record without a kind is) or publishing a model version.
PREDICT_KIND, PUBLISH_KIND = "predict", "publish"
ID_LENGTH = 32
# A script, its keys and its arguments, run together with others in one pipeline.
_ScriptCall = tuple[Script, Sequence[str], Sequence[Any]]


def new_job_id(now: float | None = None) -> str:
    """Return a fresh job id whose leading hex digits are its creation time, so ids sort by age."""
    micros = int((time.time() if now is None else now) * 1_000_000)
    return f"{micros:014x}{secrets.token_hex(9)}"


def is_job_id(value: str) -> bool:
    """Tell whether a string has the shape of a job id."""
    return len(value) == ID_LENGTH and all(c in "0123456789abcdef" for c in value)


def connect(settings: Settings, blocking: bool = False) -> redis.Redis:
    """Return a Redis client for the store that fails fast when Redis is unreachable.

    Its pool holds a bounded number of connections; a request finding them all busy waits for one
    (up to the pool timeout) rather than failing, so a burst is served late instead of refused. In
    Sentinel mode it follows the master through a failover (shared/redis_connect.py).
    """
    return connect_redis(settings, blocking=blocking)


def never_sent(exc: redis.RedisError) -> bool:
    """Tell whether a failed command surely never reached Redis (no connection could be made)."""
    text = str(exc)
    # redis-py's words for a connection that could not be made, or a pool with no connection free.
    unsent = " connecting to " in text or text.startswith(("Timeout connecting", "No connection available"))
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError) and unsent


@dataclass(frozen=True)
class NewJob:
    """A job about to be written, as the API validated it."""

    id: str
    owner: str
    model: str
    version: str
    total: int
    chunks: int
    deadline_at: float | None = None
    # The Idempotency-Key's hash and the body's digest, when the client sent a key.
    idempotency: tuple[str, str] | None = None
    kind: str = PREDICT_KIND
    # The webhook subscription as JSON ({"url", "events"}), when the client asked for one.
    webhook: str | None = None


@dataclass(frozen=True)
class Created:
    """What creating a job came to: its outcome and the id it names."""

    outcome: str  # created, existing, conflict, rate_limited, queue_full, key_full or storage_full
    id: str
    created_at: float


@dataclass(frozen=True)
class FinishedChunk:
    """The outputs a worker predicted for one chunk of one job."""

    job: str
    chunk: int
    outputs: bytes
    count: int
    predict_ms: float
    # Its records' drift counts and sampled log entries, written in the same round trip.
    watch: ChunkWatch | None = None


@dataclass(frozen=True)
class JobRecord:
    """A job as the store holds it."""

    id: str
    owner: str
    model: str
    version: str
    status: str
    created_at: float
    started_at: float | None
    completed_at: float | None
    total: int
    done: int
    chunks: int
    predict_ms: float
    error: dict[str, Any] | None = field(default=None)
    # What the job does: "predict" records, or "publish" a model version.
    kind: str = PREDICT_KIND

    @property
    def terminal(self) -> bool:
        """Tell whether the job has ended and will never change again."""
        return self.status in TERMINAL


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _ndjson_list(text: str) -> list[Any]:
    """Parse NDJSON text (one JSON value a line) into a list."""
    lines = text.rstrip("\n")
    return orjson.loads("[" + lines.replace("\n", ",") + "]") if lines else []


def _record(job_id: str, raw: Mapping[str, str]) -> JobRecord:
    return JobRecord(
        id=job_id,
        owner=raw["owner"],
        model=raw["model"],
        version=raw["version"],
        status=raw["status"],
        created_at=float(raw["created_at"]),
        started_at=_float(raw.get("started_at")),
        completed_at=_float(raw.get("completed_at")),
        total=int(raw["total"]),
        done=int(raw.get("done", 0)),
        chunks=int(raw["chunks"]),
        predict_ms=float(raw.get("predict_ms", 0)),
        error=orjson.loads(raw["error"]) if raw.get("error") else None,
        kind=raw.get("kind", PREDICT_KIND),
    )


def record_of(job_id: str, raw: Mapping[str, str]) -> JobRecord:
    """Return the record a job's hash fields describe (as a webhook delivery keeps them)."""
    return _record(job_id, raw)


class JobStore:
    """Reads and changes job records in Redis; every state change is atomic."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        # The same server and options, but bytes in and out, for the records of bulk chunks.
        self.binary = connect_redis(settings, decode=False)
        # Proves a new job's record (and its message, sent after it) reached replicas before its 202.
        self.replicas = ReplicaWait(client, replicas_to_wait(settings), settings.redis_replica_timeout_s)
        self.settings = settings
        self.retention_s = settings.retention_s
        self.lifetime_s = max(settings.max_job_age_s, settings.retention_s)
        self.queue = settings.queue_name
        # Stored bytes are counted in about 24 buckets over the retention, each kept a little longer.
        self.bucket_s = max(1, -(-self.retention_s // 24))
        self.buckets = -(-self.retention_s // self.bucket_s) + 1
        self._create = client.register_script(scripts.CREATE)
        self._claim = client.register_script(scripts.CLAIM)
        self._finish = client.register_script(scripts.FINISH_CHUNK)
        self._end = client.register_script(scripts.END)
        self._watch = client.register_script(WATCH_CHUNKS)

    def create(self, job: NewJob, inputs: bytes = b"", input_bytes: int = 0) -> Created:
        """Write a queued job, with its one input chunk if given, unless a limit refuses it.

        A bulk job's input chunks were stored first under its id; input_bytes counts them all.
        """
        now = time.time()
        limits = self.settings
        oldest = new_job_id(now - self.lifetime_s)[:14]
        fields: list[str | float | int | bytes] = [
            "owner", job.owner, "model", job.model, "version", job.version,
            "status", QUEUED, "created_at", repr(now), "total", job.total,
            "done", 0, "chunks", job.chunks, "chunks_done", 0,
        ]  # fmt: skip
        if job.deadline_at is not None:
            fields += ["deadline_at", repr(job.deadline_at)]
        if job.kind != PREDICT_KIND:
            fields += ["kind", job.kind]
        if job.webhook is not None:
            fields += ["webhook", job.webhook]
        idem_key, body_hash = job.idempotency or ("", "")
        keys = [
            f"job:{job.id}",
            f"jobs:{job.owner}",
            f"idem:{job.owner}:{idem_key}" if idem_key else "",
            f"queued:{job.model}",
            f"rate:{job.owner}:{int(now)}",
            f"job:{job.id}:in",
            f"open:{job.owner}",
            f"pending:{self.queue}",
        ]
        args: list[str | float | int | bytes] = [
            self.lifetime_s, oldest, body_hash, job.id, repr(now), limits.max_queued_per_model,
            limits.rate_limit_per_s, inputs, limits.max_open_jobs_per_key,
            limits.max_stored_bytes_per_key, input_bytes or len(inputs), self.bucket_s, self.buckets,
            self.retention_s + 2 * self.bucket_s, job.owner,
        ]  # fmt: skip
        outcome, found = self._create(keys=keys, args=args + fields)
        return Created(str(outcome), str(found), now)

    def get(self, job_id: str) -> JobRecord | None:
        """Return a job's record, or None when there is none."""
        if not is_job_id(job_id):
            return None
        raw = cast(dict[str, str], self.client.hgetall(f"job:{job_id}"))
        return self._replicated(_record(job_id, raw)) if raw else None

    def get_with_outputs(
        self, job_id: str, inline_limit: int, announced: str | None = None
    ) -> tuple[JobRecord | None, list[Any] | None]:
        """Return a job's record and, once it succeeded with at most inline_limit outputs, those.

        announced is the job's end as its announcement carried it (shared/store_scripts.py), taken
        instead of reading Redis again when it holds all that is needed.
        """
        if not is_job_id(job_id):
            return None, None
        if announced is not None:
            fields, *outputs = orjson.loads(announced)
            raw = dict(zip(fields[::2], fields[1::2], strict=True))
            found = self._with_outputs(job_id, raw, outputs[0] if outputs else None, inline_limit)
            if found is not None:
                return self._replicated(found[0]), found[1]
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(f"job:{job_id}")
        pipe.hget(f"job:{job_id}:out", "0")  # a small job's one chunk comes in the same round trip
        raw, first = pipe.execute()
        if not raw:
            return None, None
        record, outputs = self._with_outputs(job_id, raw, first or "", inline_limit) or (None, None)
        return (self._replicated(record) if record else None), outputs

    def _replicated(self, record: JobRecord) -> JobRecord:
        """Return the record once an ended job's end reached the replicas (Sentinel), or their wait ran out.

        Replication is asynchronous: an end read from the master just before it dies may be missing
        on the replica promoted, where the job then runs again; shown only once replicated, an end
        a client saw never changes. With no replica to wait for this costs nothing.
        """
        if record.terminal and self.replicas.replicas > 0:
            self.replicas.confirm(f"job:{record.id}")  # no replica in time: the master's answer stands
        return record

    def _with_outputs(
        self, job_id: str, raw: Mapping[str, str], first: str | None, inline_limit: int
    ) -> tuple[JobRecord, list[Any] | None] | None:
        """Return the record and the outputs to show with it; None when first is needed but missing."""
        record = _record(job_id, raw)
        if record.status != SUCCEEDED or record.total > inline_limit:
            return record, None
        if record.chunks > 1:
            return record, self.outputs(job_id, record.chunks)
        return None if first is None else (record, _ndjson_list(first))

    def ended(self, job_id: str) -> bool:
        """Tell whether a job has ended, or no longer exists."""
        status = self.client.hget(f"job:{job_id}", "status")
        return status is None or status in TERMINAL

    def follow(self, job_id: str, seconds: float) -> None:
        """Have the workers announce the job's start and progress, not only its end, for a while."""
        self.client.set(f"followed:{job_id}", 1, ex=max(1, math.ceil(seconds)))

    def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """Return the records of several jobs in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(f"job:{job_id}")
        records = [_record(i, raw) if raw else None for i, raw in zip(job_ids, pipe.execute(), strict=True)]
        ended = [r for r in records if r is not None and r.terminal]
        if ended:
            self._replicated(ended[-1])  # WAIT covers every earlier write: one for the whole page
        return records

    def claim(self, jobs: Sequence[tuple[str, str]]) -> list[str]:
        """Mark (job id, model) pairs running unless ended or past deadline; return each status."""
        now = repr(time.time())
        calls: list[_ScriptCall] = []
        for job_id, model in jobs:
            keys = [
                f"job:{job_id}", f"queued:{model}", f"job:{job_id}:in", f"pending:{self.queue}",
                f"claimed:{self.queue}",
            ]  # fmt: skip
            calls.append((self._claim, keys, [now, self.retention_s]))
        return [str(status) for status in self._run_scripts(calls)]

    def finish_chunks(self, chunks: Sequence[FinishedChunk]) -> None:
        """Record each chunk's outputs (NDJSON) once; a job's last chunk makes it succeed."""
        now = repr(time.time())
        calls: list[_ScriptCall] = []
        watched = [(done.job, done.chunk, done.watch) for done in chunks if done.watch is not None]
        if watched:  # before the outputs are recorded, so it sees whether they were
            calls.append((self._watch, *watch_call(watched, now)))
        for done in chunks:
            keys = [f"job:{done.job}", f"job:{done.job}:out", f"job:{done.job}:in", f"pending:{self.queue}"]
            args: list[str | int | bytes] = [
                done.chunk, done.outputs, done.count, f"{done.predict_ms:.3f}", now, self.retention_s,
                self.bucket_s, self.retention_s + 2 * self.bucket_s,
            ]  # fmt: skip
            calls.append((self._finish, keys, args))
        self._run_scripts(calls)

    def _run_scripts(self, calls: Sequence[_ScriptCall]) -> list[Any]:
        """Run script calls in one round trip by digest; calls Redis lost the script of run again once loaded.

        redis-py's pipelines ask Redis whether their scripts exist before every execution, a round
        trip each time; a script is missing only after Redis restarted or failed over, and a call
        refused for that (NOSCRIPT) did nothing, so running it again after loading is exact.
        """
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            for index in todo:
                script, keys, args = calls[index]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            missing = []
            for index, answer in zip(todo, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(answer, redis.exceptions.NoScriptError):
                    missing.append(index)
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    results[index] = answer
            if not missing:
                return results
            for script in {calls[index][0] for index in missing}:
                self.client.script_load(script.script)
            todo = missing
        raise redis.exceptions.NoScriptError("Redis dropped the job store's scripts twice in a row")

    def end(self, job_id: str, model: str, status: str, code: str, message: str) -> str:
        """End a queued or running job as failed, canceled or expired; return 'ended' or its status."""
        error = orjson.dumps({"code": code, "message": message})
        keys = [
            f"job:{job_id}", f"job:{job_id}:out", f"queued:{model}", f"job:{job_id}:in",
            f"pending:{self.queue}",
        ]  # fmt: skip
        args: list[str | int | bytes] = [status, error, repr(time.time()), self.retention_s]
        return str(self._end(keys=keys, args=args))

    def put_inputs(self, job_id: str, chunks: Mapping[int, bytes]) -> None:
        """Keep some of a bulk job's input chunks, by number, until workers take them."""
        pipe = self.binary.pipeline(transaction=False)
        pipe.hset(f"job:{job_id}:in", mapping={str(index): chunk for index, chunk in chunks.items()})
        pipe.expire(f"job:{job_id}:in", self.lifetime_s)
        pipe.execute()

    def drop_inputs(self, job_id: str) -> None:
        """Forget the input chunks of a job that will not be accepted."""
        self.client.delete(f"job:{job_id}:in")

    def stale(self, older_than: float, count: int) -> list[tuple[str, float]]:
        """Return up to count unfinished jobs of this queue last published before a time, with that time."""
        found = cast(
            list[tuple[str, float]],
            self.client.zrangebyscore(
                f"pending:{self.queue}", "-inf", older_than, start=0, num=count, withscores=True
            ),
        )
        return [(str(job_id), float(score)) for job_id, score in found]

    def delivery_mark(self) -> tuple[int, float]:
        """Return the queue's length and the latest publish time of a job a worker claimed."""
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(self.queue)
        pipe.get(f"claimed:{self.queue}")
        length, mark = pipe.execute()
        return int(length), float(mark or 0)

    def undelivered(
        self, job_ids: Sequence[str]
    ) -> list[tuple[str | None, str | None, str | None, list[int], str]]:
        """Return each job's status, model, version, the chunks whose inputs wait, and its kind."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(f"job:{job_id}", ["status", "model", "version", "kind"])
            pipe.hkeys(f"job:{job_id}:in")
        replies = pipe.execute()
        return [
            (status, model, version, sorted(int(c) for c in chunks), kind or PREDICT_KIND)
            for (status, model, version, kind), chunks in zip(replies[::2], replies[1::2], strict=True)
        ]

    def mark_published(self, job_ids: Sequence[str], now: float) -> None:
        """Record that these unfinished jobs' messages were published again now."""
        if job_ids:
            self.client.zadd(f"pending:{self.queue}", dict.fromkeys(job_ids, now), xx=True)

    def forget_pending(self, job_ids: Sequence[str]) -> None:
        """Drop ended or vanished jobs from the queue's pending set."""
        if job_ids:
            self.client.zrem(f"pending:{self.queue}", *job_ids)

    def inputs(self, job_id: str, chunk: int) -> bytes | None:
        """Return one stored input chunk's bytes, or None once it was predicted or the job ended."""
        raw = cast(bytes | None, self.binary.hget(f"job:{job_id}:in", str(chunk)))
        return raw

    def output_chunks(self, job_id: str, chunks: int) -> Iterator[str]:
        """Yield a job's outputs as NDJSON text, chunk by chunk, in input order."""
        for index in range(chunks):
            yield cast(str, self.client.hget(f"job:{job_id}:out", str(index)) or "")

    def outputs(self, job_id: str, chunks: int) -> list[Any]:
        """Return every output of a job as one list, in input order."""
        return _ndjson_list("".join(self.output_chunks(job_id, chunks)))

    def list_ids(self, owner: str, cursor: str | None, count: int, unfinished: bool = False) -> list[str]:
        """Return up to count of the owner's job ids (or unfinished ones) before the cursor, newest first."""
        top = f"({cursor}" if cursor else "+"
        index = f"{'open' if unfinished else 'jobs'}:{owner}"
        return cast(list[str], self.client.zrevrangebylex(index, top, "-", start=0, num=count))

    def forget(self, owner: str, job_ids: Sequence[str]) -> None:
        """Drop ids whose records have expired from the owner's indexes."""
        if job_ids:
            self.client.zrem(f"jobs:{owner}", *job_ids)
            self.client.zrem(f"open:{owner}", *job_ids)
