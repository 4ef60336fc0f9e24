"""Prometheus metrics of the API: its counters, summed over its processes, and figures read at scrape."""

from __future__ import annotations

import os
from collections.abc import Callable

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from api.collectors import ApiProcesses, DriftFigures, QueueFigures, VersionFigures, WorkerFigures
from shared.registry import Registry
from shared.tasks import shadow_queue

# The method label's values: any other method a client invents is counted as "other".
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
# Where each gunicorn process keeps its counters so any of them can answer a scrape with the sum
# (prometheus_client's multiprocess mode; api/server.py sets it up before the processes start).
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The API's counters and histograms, and the collectors that read the service's state at scrape."""

    def __init__(
        self,
        client: redis.Redis,
        queue: str,
        registry: Registry,
        census: Callable[[], tuple[int, int]],
        lifetime_s: float,
        follow: Callable[[], object] = lambda: None,
    ) -> None:
        self._own = CollectorRegistry()
        self.requests = Counter(
            "infer_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self._own,
        )
        self.latency = Histogram(
            "infer_http_request_seconds",
            "Time to answer an HTTP request.",
            ["route"],
            registry=self._own,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
        )
        self.jobs = Counter("infer_jobs_submitted", "Jobs accepted.", ["model"], registry=self._own)
        self.records = Counter("infer_records_submitted", "Records accepted.", ["model"], registry=self._own)
        self._registry = registry
        self._follow = follow
        self._several = bool(os.environ.get(MULTIPROC_VARIABLE))
        self._scraped = CollectorRegistry(auto_describe=False)
        for collector in (
            VersionFigures(client, registry),
            QueueFigures(client, [queue, shadow_queue(queue)], registry, lifetime_s),
            WorkerFigures(census),
            DriftFigures(client, registry),
            ApiProcesses(self._several),
        ):
            self._scraped.register(collector)

    def count_request(self, method: str, route: str, status: int) -> None:
        """Count one answered request under labels drawn from bounded sets, whatever the client sent."""
        self.requests.labels(method if method in METHODS else "other", route, str(status)).inc()

    def exposition(self) -> bytes:
        """Return every metric in the Prometheus text format."""
        self._follow()  # a version published through another process is listed, with its zeros
        for model in self._registry.names():
            # Present from the start: increase() over a model's first jobs is then not 0.
            self.jobs.labels(model)
            self.records.labels(model)
        own = self._own
        if self._several:
            # Each gunicorn process writes its own files; any of them sums them all, dead ones too,
            # so a counter never goes back whichever process answers the scrape.
            own = CollectorRegistry()
            MultiProcessCollector(own)  # type: ignore[no-untyped-call]  # untyped upstream
        return generate_latest(own) + generate_latest(self._scraped)
