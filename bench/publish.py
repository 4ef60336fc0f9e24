"""P publish: a new breast-cancer version published over HTTP and routed 10 % of the traffic under W1's load.

W1's closed-loop clients run throughout. After a quiet stretch, the benchmark uploads a freshly
trained forest as a new version with an admin key, long-polls its publish job, routes 10 % of the
traffic to it the moment it succeeded, and keeps the load on until W1's clients have been served by
it for a while. It then rolls the routing back (every later workload sees the example's version
again) and audits every accepted job in Redis: each must have ended succeeded.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson
import redis
import skops.io as sio
from inference_client import Client, InferenceError
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier

from bench import data, memory
from bench.backlog import drain
from bench.client import Response
from bench.interactive import closed_loop
from bench.jobs import Target
from bench.report import latency, ratio
from bench.service import Service

if TYPE_CHECKING:
    from bench.run import Sizes

MODEL = "breast-cancer"
NEW_WEIGHT = 10
# A routing change reaches every API process within a second: jobs sent later are held to the weights.
ROUTING_SETTLES_S = 1.0
REFERENCE_ROWS = 200
SEED = 11
# The load is bounded by time; this only keeps the job count finite.
MAX_JOBS = 10_000_000
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


class Sample(NamedTuple):
    """One succeeded job of the load: when it was sent and answered (perf_counter s), latency, version."""

    sent: float
    done: float
    latency_ms: float
    version: str


@dataclass(frozen=True)
class Candidate:
    """The files and metadata of the version to publish."""

    artifact: Path
    reference: Path
    metadata: dict[str, Any]


@dataclass
class Timeline:
    """What the load saw and when each step of the rollout happened (perf_counter seconds)."""

    new_version: str
    samples: list[Sample] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    publish_job: dict[str, Any] = field(default_factory=dict)
    first_new: asyncio.Event = field(default_factory=asyncio.Event)

    def observe(self, job: dict[str, Any], sent: float, latency_ms: float) -> None:
        """Record a succeeded job of the load, and the first one the new version served."""
        now = time.perf_counter()
        version = str(job.get("version"))
        self.samples.append(Sample(sent, now, latency_ms, version))
        if version == self.new_version and not self.first_new.is_set():
            self.marks["first_served"] = now
            self.first_new.set()


def next_version(versions: Sequence[str]) -> str:
    """Return the version after the highest semantic version listed: its minor part plus one."""
    found = [tuple(int(p) for p in m.groups()) for v in versions if (m := _SEMVER.match(v))]
    major, minor, _ = max(found, default=(1, -1, 0))
    return f"{major}.{minor + 1}.0"


def window(samples: Sequence[Sample], start: float, end: float) -> dict[str, Any]:
    """Return the latency of the jobs sent in [start, end) and the rate of those answered in it."""
    sent = [s.latency_ms for s in samples if start <= s.sent < end]
    answered = sum(start <= s.done < end for s in samples)
    seconds = end - start
    return {
        "seconds": round(seconds, 3),
        "jobs": len(sent),
        "jobs_per_s": round(answered / seconds, 1) if seconds > 0 else None,
        "latency_ms": latency(sent),
    }


def version_share(samples: Sequence[Sample], since: float) -> dict[str, Any]:
    """Return how many jobs sent from a time on each version served, and each one's share of them."""
    counts: dict[str, int] = {}
    for sample in samples:
        if sample.sent >= since:
            counts[sample.version] = counts.get(sample.version, 0) + 1
    total = sum(counts.values())
    return {v: {"jobs": n, "share": round(n / total, 4)} for v, n in sorted(counts.items())}


def write_candidate(folder: Path, features: list[str], version: str, trees: int) -> Candidate:
    """Train a forest on the breast-cancer data (the model's feature order); write what an upload sends."""
    folder.mkdir(parents=True, exist_ok=True)
    bunch = load_breast_cancer()
    rows = data.breast_cancer_rows(features)
    labels = np.asarray(bunch.target_names)[bunch.target]
    forest = RandomForestClassifier(n_estimators=trees, random_state=SEED, n_jobs=1).fit(rows, labels)
    artifact, reference = folder / "forest.skops", folder / "reference.csv"
    sio.dump(forest, artifact)
    reference.write_bytes(data.csv_body(features, rows[:REFERENCE_ROWS], REFERENCE_ROWS))
    metadata = {
        "version": version,
        "task": "classification",
        "description": f"Benchmark P: a retrained forest, {trees} trees.",
        "features": [{"name": name, "type": "number"} for name in features],
        "labels": [str(label) for label in forest.classes_],
    }
    return Candidate(artifact, reference, metadata)


def _publish(
    base_url: str, admin_key: str, candidate: Candidate, timeout: float
) -> tuple[dict[str, Any], float]:
    """Upload the candidate, long-poll its publish job; return the ended job and when the upload was taken."""
    with Client(base_url, admin_key, timeout=timeout) as client:
        job = client.publish(MODEL, candidate.artifact, candidate.metadata, candidate.reference)
        accepted = time.perf_counter()
        job.wait(timeout)
    return job.data, accepted


async def _call(target: Target, method: str, path: str, body: Any = None) -> Response:
    conn = target.connect()
    try:
        headers = target.headers(Content_Type="application/json") if body is not None else target.headers()
        return await conn.request(method, path, headers, orjson.dumps(body) if body is not None else b"")
    finally:
        await conn.close()


async def _route(admin: Target, weights: dict[str, int]) -> Response:
    return await _call(admin, "PUT", f"/v1/models/{MODEL}/routing", {"routes": weights})


async def _roll_out(
    admin: Target, candidate: Candidate, old: str, timeline: Timeline, deadline: float
) -> str | None:
    """Publish, route, and wait for the new version's first served job; return what went wrong."""
    new, marks = timeline.new_version, timeline.marks
    base_url = f"http://{admin.host}:{admin.port}"
    marks["upload"] = time.perf_counter()
    try:
        job, marks["uploaded"] = await asyncio.to_thread(
            _publish, base_url, admin.key, candidate, max(1.0, deadline - time.perf_counter())
        )
    except (InferenceError, OSError) as exc:
        return f"publishing {new} failed: {exc}"
    marks["published"] = time.perf_counter()
    timeline.publish_job = job
    if job.get("status") != "succeeded":
        return f"the publish job of {new} ended {job.get('status')}: {job.get('error')}"
    answer = await _route(admin, {old: 100 - NEW_WEIGHT, new: NEW_WEIGHT})
    marks["routed"] = time.perf_counter()
    if answer.status != 200:
        return f"PUT routing answered {answer.status}: {answer.body[:300]!r}"
    try:
        await asyncio.wait_for(timeline.first_new.wait(), max(0.0, deadline - time.perf_counter()))
    except TimeoutError:
        return f"no job of the load was served by {new} within the workload's time bound"
    return None


def _since_upload(marks: dict[str, float]) -> dict[str, float]:
    """Return when each step came, in seconds from the upload's start."""
    start = marks.get("upload")
    steps = ("uploaded", "published", "routed", "first_served")
    return {step: round(marks[step] - start, 3) for step in steps if start is not None and step in marks}


async def rollout(service: Service, target: Target, sizes: Sizes) -> dict[str, Any]:
    """Run W1's load while a new version is published and routed 10 %; return P's figures."""
    admin = Target(target.host, target.port, service.admin_key)
    described = (await _call(target, "GET", f"/v1/models/{MODEL}")).json()
    old, new = str(described["version"]), next_version(described["versions"])
    features: list[str] = described["features"]
    rows = data.breast_cancer_rows(features)
    folder = service.stack.run_dir / "publish"
    candidate = await asyncio.to_thread(write_candidate, folder, features, new, sizes.p_trees)
    timeline = Timeline(new)
    stop = asyncio.Event()
    error: str | None = None
    with memory.cpu_meter(service.roles) as cpu:
        started = time.perf_counter()
        deadline = started + sizes.p_seconds
        load = asyncio.create_task(
            closed_loop(target, MODEL, rows, sizes.w1_clients, MAX_JOBS, sizes.p_seconds, stop=stop,
                        observe=timeline.observe)
        )  # fmt: skip
        try:
            await asyncio.sleep(sizes.p_before_s)
            error = await _roll_out(admin, candidate, old, timeline, deadline)
            if error is None:
                await asyncio.sleep(sizes.p_after_s)
        finally:
            stop.set()
            run = await load
        stopped = time.perf_counter()
    rollback = await _route(admin, {old: 100})
    client = redis.Redis.from_url(service.redis_url, decode_responses=True)
    ended = await asyncio.to_thread(drain, client, MODEL, run.accepted, sizes.drain_seconds)
    lost = sorted(set(ended["not_succeeded"]) | set(run.lost))
    marks = timeline.marks
    upload = marks.get("upload", stopped)
    before, during = window(timeline.samples, started, upload), window(timeline.samples, upload, stopped)
    figures: dict[str, Any] = {
        "model": MODEL,
        "clients": sizes.w1_clients,
        "old_version": old,
        "new_version": new,
        "new_version_trees": sizes.p_trees,
        "new_weight_pct": NEW_WEIGHT,
        "seconds_to_first_served": _since_upload(marks).get("first_served"),
        "steps_s_from_upload": _since_upload(marks),
        "publish_job": {k: timeline.publish_job.get(k) for k in ("id", "status", "error", "metrics")},
        "before_rollout": before,
        "during_rollout": during,
        "p99_during_over_before": ratio(during["latency_ms"]["p99"], before["latency_ms"]["p99"]),
        "served_after_routing": version_share(
            timeline.samples, marks.get("routed", stopped) + ROUTING_SETTLES_S
        ),
        "rolled_back": rollback.status == 200,
        "jobs": run.attempted,
        "accepted": len(run.accepted),
        "succeeded": run.succeeded,
        "statuses": ended["statuses"],
        "lost": len(lost),
        "lost_ids": lost[:10],
        "errors": sum(run.errors.values()),
        "error_kinds": dict(run.errors),
        "cpu_s": cpu,
    }
    if error is not None or rollback.status != 200:
        figures["error"] = error or f"rolling back answered {rollback.status}: {rollback.body[:300]!r}"
    return figures
