"""The worker's Celery tasks: thin wrappers that hand messages to the prediction and publishing code."""

from __future__ import annotations

import threading

import redis
from celery import Celery
from celery.exceptions import Reject
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from shared.reaper import Reaper
from shared.registry import make_registry
from shared.settings import Settings
from shared.store import JobStore, connect
from shared.task_messages import TaskSender
from shared.tasks import PREDICT, PUBLISH, ChunkMessage, PublishMessage, shadow_queue
from worker.cache import ModelCache
from worker.drift import Watcher
from worker.predict import run_chunks
from worker.publish_job import run_publish
from worker.shadow import register_shadow_task, send_shadows
from worker.webhooks import Deliverer


class WorkerState:
    """What one worker process keeps: its settings, its store connection and its loaded models."""

    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.store = JobStore(connect(settings), settings)
        self.cache = ModelCache(make_registry(settings), settings.worker_model_bytes, self.store.client)
        self.cache.load_all()
        self.watcher = Watcher(self.cache.registry, settings, self.store.client)
        self.shadows = TaskSender(celery, shadow_queue(settings.queue_name), self.store.client)


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register the predict and publish tasks on the app, their state made once per process on first need."""
    state: list[WorkerState] = []

    def current() -> WorkerState:
        if not state:
            state.append(WorkerState(settings, app))
        return state[0]

    @app.task(name=PREDICT, bind=False)
    def predict(messages: list[ChunkMessage]) -> int:
        """Predict a batch of job chunks and record their outputs."""
        try:
            ran = run_chunks(current().store, current().cache, messages, current().watcher)
        except redis.RedisError as exc:
            # Celery acknowledges a task that fails; this one must come back once Redis does.
            raise Reject(f"job store unreachable: {exc}", requeue=True) from exc
        # Only once the answers are recorded: the shadow version predicts on its own queue.
        send_shadows(current().shadows, messages)
        return ran

    @app.task(name=PUBLISH, bind=False)
    def publish(message: PublishMessage) -> str:
        """Publish the upload of a publish job as a model version and record how the job ended."""
        try:
            return run_publish(current().store, current().cache.registry, message)
        except redis.RedisError as exc:
            raise Reject(f"job store unreachable: {exc}", requeue=True) from exc

    register_shadow_task(app, settings, lambda: (current().store, current().cache))

    @worker_process_init.connect(weak=False)
    def _load_models(**_: object) -> None:
        current()

    stops: list[threading.Event] = []

    @worker_ready.connect(weak=False)
    def _start_reaper(**_: object) -> None:
        # In the main process, beside the consumer: lost messages are found wherever a worker runs.
        store = JobStore(connect(settings), settings)
        sender = TaskSender(app, settings.queue_name, store.client)
        stops.append(Reaper(store, sender.chunks, settings.redelivery_s, send_publish=sender.publish).start())

    @worker_ready.connect(weak=False)
    def _start_deliverer(**_: object) -> None:
        # Webhooks go out from the main process too, off the prediction path; only signed ones ever.
        if settings.webhook_secret is not None:
            stops.append(Deliverer(JobStore(connect(settings), settings), settings).start())

    @worker_shutdown.connect(weak=False)
    def _stop_reaper(**_: object) -> None:
        for stop in stops:
            stop.set()
