"""Prometheus collectors read at scrape time from Redis, Celery and /proc: alike in every API process."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import redis
from kombu.exceptions import OperationalError
from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from api.drift import drift_report
from shared.drift import REFERENCE_FILE, read_window
from shared.errors import ServiceError
from shared.registry import Manifest, Registry
from shared.stats import BUCKETS, OUTCOMES, VersionStats, read_stats

# kombu's Redis transport keeps every delivered, unacknowledged message in this hash (its default name).
UNACKED_KEY = "unacked"
_VERSION = ["model", "version"]
log = logging.getLogger(__name__)
# Drift is reported over the drift route's default window, computed at most once a minute a process.
DRIFT_WINDOW_S = 3600
DRIFT_EVERY_S = 60.0


class VersionFigures(Collector):
    """Reports each model version's jobs by outcome, records and latency, zero for a version not yet used."""

    def __init__(self, client: redis.Redis, registry: Registry) -> None:
        self._client = client
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        """Yield the three families, read from the counters the store's scripts keep in Redis."""
        jobs = CounterMetricFamily(
            "infer_jobs", "Jobs ended, by model version and outcome.", labels=[*_VERSION, "outcome"]
        )
        records = CounterMetricFamily(
            "infer_records", "Records predicted, by model version.", labels=_VERSION
        )
        seconds = HistogramMetricFamily(
            "infer_job_seconds",
            "Seconds from submission to the end of each succeeded job, by model version.",
            labels=_VERSION,
        )
        # Every published version from the start, so increase() sees its first jobs.
        figures = {(m.name, m.version): VersionStats(m.name, m.version) for m in self._registry.all()}
        # Redis away: the scrape still answers, with the published versions' zeros.
        with contextlib.suppress(redis.RedisError):
            figures.update({(s.model, s.version): s for s in read_stats(self._client)})
        for (model, version), stats in sorted(figures.items()):
            for outcome in OUTCOMES:
                jobs.add_metric([model, version, outcome], float(stats.jobs.get(outcome, 0)))
            records.add_metric([model, version], float(stats.records))
            buckets = stats.buckets or [(f"{b:g}", 0) for b in BUCKETS] + [("+Inf", 0)]
            seconds.add_metric([model, version], [(b, float(n)) for b, n in buckets], stats.seconds_sum)
        yield from (jobs, records, seconds)


class QueueFigures(Collector):
    """Reports the broker's queues and, per model, its queued jobs and how long the oldest has waited."""

    def __init__(self, client: redis.Redis, queues: list[str], registry: Registry, lifetime_s: float) -> None:
        self._client = client
        self._queues = queues
        self._registry = registry
        self._lifetime_s = lifetime_s

    def collect(self) -> Iterator[Metric]:
        """Yield the queue families from one pipelined round trip to Redis."""
        depth = GaugeMetricFamily(
            "infer_queue_depth", "Messages waiting in a broker queue (jobs and shadow).", labels=["queue"]
        )
        unacked = GaugeMetricFamily(
            "infer_queue_unacked", "Messages workers hold, reserved or being run, not yet acknowledged."
        )
        queued = GaugeMetricFamily(
            "infer_jobs_queued", "Jobs accepted and not yet started, by model.", labels=["model"]
        )
        oldest = GaugeMetricFamily(
            "infer_oldest_queued_job_seconds",
            "Seconds the oldest job not yet started has waited, by model (0 when none waits).",
            labels=["model"],
        )
        models = self._registry.names()
        now = time.time()
        # A job older than the store's lifetime is gone, whatever its set still says.
        since = now - self._lifetime_s
        pipe = self._client.pipeline(transaction=False)
        for queue in self._queues:
            pipe.llen(queue)
        pipe.hlen(UNACKED_KEY)
        for model in models:
            pipe.zcount(f"queued:{model}", since, "+inf")
            pipe.zrangebyscore(f"queued:{model}", since, "+inf", start=0, num=1, withscores=True)
        try:
            answers = pipe.execute()
        except redis.RedisError:
            answers = [math.nan] * (len(self._queues) + 1) + [math.nan, []] * len(models)
        for queue, length in zip(self._queues, answers, strict=False):
            depth.add_metric([queue], float(length))
        unacked.add_metric([], float(answers[len(self._queues)]))
        per_model = answers[len(self._queues) + 1 :]
        for index, model in enumerate(models):
            count, first = per_model[2 * index], per_model[2 * index + 1]
            queued.add_metric([model], float(count))
            waited = max(0.0, now - float(first[0][1])) if first else 0.0
            oldest.add_metric([model], math.nan if math.isnan(float(count)) else waited)
        yield from (depth, unacked, queued, oldest)


class WorkerFigures(Collector):
    """Reports the Celery workers that answer and those consuming the jobs' queue."""

    def __init__(self, census: Callable[[], tuple[int, int]]) -> None:
        self._census = census

    def collect(self) -> Iterator[Metric]:
        """Yield the two gauges from the census (a broadcast, remembered a few seconds)."""
        online = GaugeMetricFamily("infer_workers_online", "Celery workers answering a broadcast.")
        consuming = GaugeMetricFamily("infer_workers_consuming", "Celery workers consuming the jobs' queue.")
        try:
            answering, taking = (float(n) for n in self._census())
        except (redis.RedisError, OperationalError, OSError):
            answering = taking = math.nan
        online.add_metric([], answering)
        consuming.add_metric([], taking)
        yield from (online, consuming)


class DriftFigures(Collector):
    """Reports each version's drift over the last window against its reference, computed once a minute."""

    def __init__(self, client: redis.Redis, registry: Registry, window_s: int = DRIFT_WINDOW_S) -> None:
        self._client = client
        self._registry = registry
        self._window_s = window_s
        self._computed: tuple[float, list[Metric]] = (float("-inf"), [])
        # A version's reference never changes once published: read each once.
        self._references: dict[tuple[str, str], dict[str, Any] | None] = {}

    def collect(self) -> Iterator[Metric]:
        """Yield the drift families, computed again when the last were a minute old."""
        at, families = self._computed
        if time.monotonic() - at >= DRIFT_EVERY_S:
            families = self._compute()
            self._computed = (time.monotonic(), families)
        yield from families

    def _compute(self) -> list[Metric]:
        psi = GaugeMetricFamily(
            "infer_drift_psi",
            f"PSI of each feature's last {self._window_s} s of served records against the reference.",
            labels=[*_VERSION, "feature"],
        )
        limit = GaugeMetricFamily(
            "infer_drift_psi_threshold",
            "PSI from which the feature drifts: 0.2, raised while few records make PSI noisy.",
            labels=[*_VERSION, "feature"],
        )
        predicted = GaugeMetricFamily(
            "infer_drift_prediction_psi",
            f"PSI of the last {self._window_s} s of predictions against the reference's.",
            labels=_VERSION,
        )
        rows = GaugeMetricFamily(
            "infer_drift_window_records", f"Records served in the last {self._window_s} s.", labels=_VERSION
        )
        for manifest in self._registry.all():
            version = [manifest.name, manifest.version]
            reference = self._reference(manifest)
            if reference is None:
                continue
            try:
                counts = read_window(self._client, manifest.name, manifest.version, self._window_s)
            except redis.RedisError:
                continue
            try:
                report = drift_report(manifest.name, manifest.version, self._window_s, reference, counts)
            except (KeyError, TypeError, ValueError):
                log.warning("the reference of %s %s cannot be read for drift", *version, exc_info=True)
                continue
            rows.add_metric(version, float(report["current_rows"]))
            for feature in report["features"]:
                if feature["psi"] is not None:
                    psi.add_metric([*version, feature["name"]], feature["psi"])
                    limit.add_metric([*version, feature["name"]], feature["psi_threshold"])
            if report["prediction"]["psi"] is not None:
                predicted.add_metric(version, report["prediction"]["psi"])
        return [psi, limit, predicted, rows]

    def _reference(self, manifest: Manifest) -> dict[str, Any] | None:
        key = (manifest.name, manifest.version)
        if key not in self._references:
            try:
                raw = self._registry.read_file(manifest, REFERENCE_FILE)
            except ServiceError:
                return None  # the storage is away: asked again at the next computation
            try:
                self._references[key] = orjson.loads(raw) if raw is not None else None
            except orjson.JSONDecodeError:
                self._references[key] = None
        return self._references[key]


class ApiProcesses(Collector):
    """Reports the standard process_* figures of every process of this API server, labelled by pid."""

    def __init__(self, several: bool) -> None:
        self._several = several

    def collect(self) -> Iterator[Metric]:
        """Yield each process_* family with one sample per API process."""
        families: dict[str, Metric] = {}
        for pid in _api_pids() if self._several else [os.getpid()]:
            for family in ProcessCollector(pid=functools.partial(int, pid), registry=None).collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                merged.samples += [
                    Sample(s.name, {**s.labels, "pid": str(pid)}, s.value, s.timestamp)
                    for s in family.samples
                ]
        yield from families.values()


def _api_pids() -> list[int]:
    """Return the gunicorn master and its workers: this parent and its children running what this runs."""
    master = os.getppid()
    mine = _cmdline(os.getpid())
    pids = [master] if _cmdline(master) == mine else []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent(entry) == master and _cmdline(int(entry.name)) == mine:
            pids.append(int(entry.name))
    return sorted(pids)


def _parent(proc: Path) -> int:
    try:
        # The command name in parentheses may hold spaces: the fields that follow it are plain.
        return int((proc / "stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
