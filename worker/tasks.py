"""The worker's Celery tasks: thin wrappers that hand messages to the prediction code."""

from __future__ import annotations

import redis
from celery import Celery
from celery.exceptions import Reject

from shared.registry import Registry
from shared.settings import Settings
from shared.store import JobStore, connect
from shared.tasks import PREDICT, ChunkMessage
from worker.cache import ModelCache
from worker.predict import run_chunks


class WorkerState:
    """What one worker process keeps: its settings, its store connection and its loaded models."""

    def __init__(self, settings: Settings) -> None:
        self.store = JobStore(connect(settings), settings.retention_s, settings.max_job_age_s)
        self.cache = ModelCache(Registry(settings.registry_path))
        self.cache.load_all()


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register the predict task on the app, its state made once per process on first need."""
    state: list[WorkerState] = []

    def current() -> WorkerState:
        if not state:
            state.append(WorkerState(settings))
        return state[0]

    @app.task(name=PREDICT, bind=False)
    def predict(messages: list[ChunkMessage]) -> int:
        """Predict a batch of job chunks and record their outputs."""
        try:
            return run_chunks(current().store, current().cache, messages)
        except redis.RedisError as exc:
            # Celery acknowledges a task that fails; this one must come back once Redis does.
            raise Reject(f"job store unreachable: {exc}", requeue=True) from exc

    from celery.signals import worker_process_init

    @worker_process_init.connect(weak=False)
    def _load_models(**_: object) -> None:
        current()
