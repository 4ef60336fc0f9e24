"""Shadow predictions: a shadow version predicts records already answered, and only how it agrees is kept.

The served outputs were recorded before the shadow message was sent, so nothing here can delay or
change a job's answer; whatever fails is logged and dropped.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
from celery import Celery
from kombu import Exchange, Queue

from shared.chunks import Records, as_rows
from shared.registry import Manifest
from shared.routing import count_comparisons
from shared.settings import Settings
from shared.store import JobStore
from shared.task_messages import TaskSender
from shared.tasks import SHADOW, ChunkMessage, ShadowMessage, shadow_queue
from worker.cache import ModelCache
from worker.runtimes.base import outputs

log = logging.getLogger(__name__)

# A regression output agrees when the two values differ by at most this, relative to the served one.
RELATIVE_TOLERANCE = 1e-6


def register_shadow_task(
    app: Celery, settings: Settings, state: Callable[[], tuple[JobStore, ModelCache]]
) -> None:
    """Register the shadow task, and have the app's workers consume the shadow queue beside the jobs'."""
    names = (settings.queue_name, shadow_queue(settings.queue_name))
    app.conf.task_queues = [Queue(name, Exchange(name), routing_key=name) for name in names]

    # Acknowledged on receipt: a shadow prediction lost with its worker is dropped, never redone.
    @app.task(name=SHADOW, bind=False, acks_late=False)
    def shadow(messages: list[ShadowMessage]) -> int:
        """Predict answered chunks with their shadow version and count how its outputs agree."""
        store, cache = state()
        return run_shadows(store, cache, messages)


def send_shadows(sender: TaskSender, messages: Sequence[ChunkMessage]) -> int:
    """Send one shadow message with every answered chunk that names a shadow version; return how many."""
    shadowed = [
        ShadowMessage(
            job=m["job"],
            model=m["model"],
            version=m["version"],
            shadow=m["shadow"],
            chunk=m["chunk"],
            inputs=m["inputs"],
        )
        for m in messages
        if m.get("shadow") and m["inputs"] is not None
    ]
    if not shadowed:
        return 0
    try:
        sender.shadows(shadowed)
    except Exception:  # shadow work is side work: never let it fail the job's own task
        log.exception("could not send %d shadow prediction(s)", len(shadowed))
        return 0
    return len(shadowed)


def compare(
    manifest: Manifest, served: Sequence[dict[str, Any]], shadowed: Sequence[dict[str, Any]]
) -> tuple[int, int, float]:
    """Return the records compared, those whose outputs agree and the sum of their absolute differences.

    A classification agrees on the label, and differs by its largest probability difference; a
    regression agrees within RELATIVE_TOLERANCE of the served value, and differs by the values'.
    """
    agreed = 0
    diff = 0.0
    for one, other in zip(served, shadowed, strict=True):
        if manifest.task == "regression":
            gap = abs(float(one["value"]) - float(other["value"]))
            agreed += gap <= RELATIVE_TOLERANCE * max(1.0, abs(float(one["value"])))
        else:
            probabilities, others = one["probabilities"], other["probabilities"]
            gap = max(abs(p - others.get(label, 0.0)) for label, p in probabilities.items())
            agreed += one["label"] == other["label"]
        diff += 0.0 if np.isnan(gap) else gap
    return len(served), agreed, diff


def _served_outputs(store: JobStore, message: ShadowMessage) -> list[dict[str, Any]] | None:
    """Return the outputs the job's chunk was answered with, or None when it has none (it did not succeed)."""
    *_, text = store.output_chunks(message["job"], message["chunk"] + 1)
    if not text:
        return None
    parsed: list[dict[str, Any]] = [orjson.loads(line) for line in text.splitlines() if line]
    return parsed


def run_shadows(store: JobStore, cache: ModelCache, messages: Sequence[ShadowMessage]) -> int:
    """Predict each answered chunk with its shadow version and count comparisons; return records compared."""
    groups: dict[tuple[str, str, str], list[ShadowMessage]] = defaultdict(list)
    for message in messages:
        groups[(message["model"], message["version"], message["shadow"])].append(message)
    compared = 0
    for (name, served_version, shadow_version), group in groups.items():
        try:
            compared += _compare_group(store, cache, name, served_version, shadow_version, group)
        except Exception:  # a shadow that fails to load or predict must not touch the served jobs
            log.exception("shadow predictions of %s %s failed; dropped", name, shadow_version)
    return compared


def _compare_group(
    store: JobStore, cache: ModelCache, name: str, served_version: str, shadow_version: str,
    group: list[ShadowMessage],
) -> int:  # fmt: skip
    served_manifest = cache.get(name, served_version).manifest
    shadow = cache.get(name, shadow_version)
    if shadow.manifest.features != served_manifest.features or shadow.manifest.task != served_manifest.task:
        log.warning(
            "shadow %s %s takes other features or task than %s; not compared",
            name,
            shadow_version,
            served_version,
        )
        return 0
    served: list[dict[str, Any]] = []
    parts: list[Records] = []
    for message in group:
        answered = _served_outputs(store, message)
        if answered is None or len(answered) != len(message["inputs"]):
            continue
        served += answered
        parts.append(as_rows(shadow.manifest, message["inputs"]))
    if not parts:
        return 0
    if shadow.manifest.is_text:
        records: Records = [record for part in parts for record in part]
    else:
        records = np.concatenate(parts) if len(parts) > 1 else parts[0]
    compared, agreed, diff = compare(
        served_manifest, served, outputs(shadow.manifest, shadow.scores(records))
    )
    count_comparisons(store.client, name, shadow_version, compared, agreed, diff)
    return compared
