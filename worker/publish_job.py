"""Running a publish job: claim it, publish its upload (one worker at a time), record how it ended, let go.

A message may reach two workers (one held past the broker's visibility timeout, one sent again by
the reaper), so a run holds ``publish-run:{job}`` while it works, renewed while it lives; a second
delivery finds it held and leaves the job to the first. Once the job has ended, its upload and the
version's publishing lock are dropped, whatever the outcome; while the job store is away nothing
is dropped and the message comes back.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import redis

from shared.errors import ErrorCode, ServiceError
from shared.publishing import release_lock
from shared.registry import Registry, bump_generation
from shared.store import FAILED, RUNNING, SUCCEEDED, FinishedChunk, JobStore
from shared.tasks import PublishMessage
from worker.publishing import publish_upload

log = logging.getLogger(__name__)

# A run's hold on its job lapses this long after its worker died; it is renewed every third of it.
RUN_HOLD_S = 30


@contextmanager
def _exclusive(client: redis.Redis, key: str, ttl_s: int) -> Iterator[bool]:
    """Hold a key while the block runs, renewed in the background; yield whether it was taken."""
    token = f"{time.time_ns()}:{threading.get_ident()}"
    if not client.set(key, token, nx=True, ex=ttl_s):
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                client.expire(key, ttl_s)
            except redis.RedisError:  # the next renewal tries again; the hold lapses if Redis stays away
                log.warning("could not renew %s", key)

    thread = threading.Thread(target=renew, name="publish-hold", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join()
        client.delete(key)


def run_publish(store: JobStore, registry: Registry, message: PublishMessage) -> str:
    """Publish a publish job's upload and end the job; return its status as this run left it."""
    job, name, version = message["job"], message["model"], message["version"]
    (status,) = store.claim([(job, name)])
    if status != RUNNING:
        _let_go(store, registry, message)  # it ended (canceled, expired) or is gone: its upload is not needed
        return status
    with _exclusive(store.client, f"publish-run:{job}", RUN_HOLD_S) as mine:
        if not mine:
            return RUNNING  # another worker publishes it now
        started = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="publish-") as folder:
                manifest = publish_upload(registry, job, name, version, Path(folder))
        except ServiceError as exc:
            store.end(job, name, FAILED, exc.code, exc.message)
            status = FAILED
        except redis.RedisError:
            raise  # the job store is away: the task hands its message back, keeping the upload
        except Exception as exc:  # the registry's storage failed, or a check raised what it should not
            log.exception("publishing %s %s (job %s) failed", name, version, job)
            reason = f"Publishing failed ({type(exc).__name__}: {exc}"[:400] + "); publish the version again."
            store.end(job, name, FAILED, ErrorCode.INTERNAL, reason)
            status = FAILED
        else:
            bump_generation(store.client)
            line = {"name": name, "version": version, "runtime": manifest.runtime, "sha256": manifest.sha256}
            elapsed_ms = (time.perf_counter() - started) * 1000
            store.finish_chunks([FinishedChunk(job, 0, orjson.dumps(line) + b"\n", 1, elapsed_ms)])
            status = SUCCEEDED
    _let_go(store, registry, message)
    return status


def _let_go(store: JobStore, registry: Registry, message: PublishMessage) -> None:
    """Drop an ended publish job's upload and its version's publishing lock."""
    try:
        registry.drop_upload(message["job"])
    except Exception:  # the upload stays behind in storage; the lock must still go
        log.exception("could not drop the upload of publish job %s", message["job"])
    release_lock(store.client, message["model"], message["version"], message["job"])
