"""The long-lived objects one API process shares among its requests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from celery import Celery
from flask import current_app

from api.limits import OpenRequests, StoreCapacity
from api.metrics import Metrics
from api.publisher import CoalescingPublisher
from api.routing import RoutingTable
from api.waiter import CompletionWaiter
from shared.registry import Registry
from shared.settings import Settings
from shared.store import JobStore
from shared.task_messages import TaskSender

# Asking workers which queues they consume takes a broadcast round; probes come often, so reuse a
# positive answer briefly.
WORKER_PROBE_TTL_S = 5.0
WORKER_PROBE_TIMEOUT_S = 1.0


@dataclass
class WorkerProbe:
    """Counts the workers that consume the jobs' queue, remembering a positive answer for a few seconds."""

    celery: Celery
    # When it last asked, and how many workers answered and consumed the jobs' queue then.
    _seen: tuple[float, int, int] = field(default=(float("-inf"), 0, 0))

    @property
    def queue(self) -> str:
        """Return the name of the queue the API publishes jobs to."""
        return str(self.celery.conf.task_default_queue)

    def count(self) -> int:
        """Return how many workers consumed the jobs' queue at the latest look."""
        at, _, consuming = self._seen
        if time.monotonic() - at < WORKER_PROBE_TTL_S and consuming > 0:
            return consuming
        return self._ask()[1]

    def census(self) -> tuple[int, int]:
        """Return how many workers answered and how many consumed the jobs' queue, asked every few seconds."""
        at, online, consuming = self._seen
        if time.monotonic() - at < WORKER_PROBE_TTL_S:
            return online, consuming
        return self._ask()

    def _ask(self) -> tuple[int, int]:
        # A worker told to stop consuming (cancel_consumer) still answers a ping: ask what it consumes.
        replies = self.celery.control.inspect(timeout=WORKER_PROBE_TIMEOUT_S).active_queues() or {}
        consuming = sum(
            any(queue.get("name") == self.queue for queue in queues or []) for queues in replies.values()
        )
        self._seen = (time.monotonic(), len(replies), consuming)
        return len(replies), consuming


@dataclass
class Services:
    """The settings and the shared objects (store, registry, broker, waiter, metrics) of one app."""

    settings: Settings
    store: JobStore
    registry: Registry
    celery: Celery
    waiter: CompletionWaiter
    metrics: Metrics
    workers: WorkerProbe
    sender: TaskSender
    publisher: CoalescingPublisher
    capacity: StoreCapacity
    open_requests: OpenRequests
    routing: RoutingTable


EXTENSION = "infer"


def services() -> Services:
    """Return the services of the app handling the current request."""
    found: Services = current_app.extensions[EXTENSION]
    return found
