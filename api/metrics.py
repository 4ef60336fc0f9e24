"""Prometheus metrics of the API, and the queue depth read from Redis when scraped."""

from __future__ import annotations

import os
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from shared.stats import read_stats

# The method label's values: any other method a client invents is counted as "other".
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


class _QueueDepth(Collector):
    """Reports how many messages wait in the broker queue at scrape time."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self._client = client
        self._queue = queue

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "infer_queue_depth", "Messages waiting in the broker queue.", labels=["queue"]
        )
        try:
            family.add_metric([self._queue], float(self._client.llen(self._queue)))
        except redis.RedisError:
            family.add_metric([self._queue], float("nan"))
        yield family


class _VersionFigures(Collector):
    """Reports each model version's jobs, records and latency from the counters in Redis when scraped."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        jobs = CounterMetricFamily(
            "infer_jobs", "Jobs ended, by model version and outcome.", labels=[*labels, "outcome"]
        )
        records = CounterMetricFamily("infer_records", "Records predicted, by model version.", labels=labels)
        seconds = HistogramMetricFamily(
            "infer_job_seconds",
            "Seconds from submission to the end of each succeeded job, by model version.",
            labels=labels,
        )
        try:
            figures = read_stats(self._client)
        except redis.RedisError:
            figures = []  # the scrape still answers; these families are empty until Redis is back
        for stats in figures:
            version = [stats.model, stats.version]
            for outcome, count in stats.jobs.items():
                jobs.add_metric([*version, outcome], float(count))
            records.add_metric(version, float(stats.records))
            seconds.add_metric(version, [(b, float(n)) for b, n in stats.buckets], stats.seconds_sum)
        yield from (jobs, records, seconds)


class Metrics:
    """The API's counters and histograms, kept in their own registry."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "infer_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "infer_http_request_seconds",
            "Time to answer an HTTP request.",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
        )
        self.jobs = Counter("infer_jobs_submitted", "Jobs accepted.", ["model"], registry=self.registry)
        self.records = Counter(
            "infer_records_submitted", "Records accepted.", ["model"], registry=self.registry
        )
        self._queue = _QueueDepth(client, queue)
        self._versions = _VersionFigures(client)

    def count_request(self, method: str, route: str, status: int) -> None:
        """Count one answered request under labels drawn from bounded sets, whatever the client sent."""
        self.requests.labels(method if method in METHODS else "other", route, str(status)).inc()

    def exposition(self) -> bytes:
        """Return every metric in the Prometheus text format."""
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Under several gunicorn processes each writes its own file; sum them all.
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
        return b"".join(generate_latest(r) for r in (registry, _single(self._queue), _single(self._versions)))


def _single(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry
