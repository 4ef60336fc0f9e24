"""The long-lived objects one API process shares among its requests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from celery import Celery
from flask import current_app

from api.limits import OpenRequests, StoreCapacity
from api.metrics import Metrics
from api.publisher import CoalescingPublisher
from api.waiter import CompletionWaiter
from shared.registry import Registry
from shared.settings import Settings
from shared.store import JobStore

# Asking workers to answer a ping takes a broadcast round; probes come often, so reuse it briefly.
WORKER_PING_TTL_S = 5.0
WORKER_PING_TIMEOUT_S = 1.0


@dataclass
class WorkerProbe:
    """Counts the workers that answer a ping, remembering a positive answer for a few seconds."""

    celery: Celery
    _seen: tuple[float, int] = field(default=(0.0, 0))

    def count(self) -> int:
        """Return how many workers answered the latest ping."""
        now = time.monotonic()
        if now - self._seen[0] < WORKER_PING_TTL_S and self._seen[1] > 0:
            return self._seen[1]
        replies = self.celery.control.ping(timeout=WORKER_PING_TIMEOUT_S) or []
        self._seen = (now, len(replies))
        return len(replies)


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
    publisher: CoalescingPublisher
    capacity: StoreCapacity
    open_requests: OpenRequests


EXTENSION = "infer"


def services() -> Services:
    """Return the services of the app handling the current request."""
    found: Services = current_app.extensions[EXTENSION]
    return found
