"""Predicting chunks of jobs: claim them, group them by model version, predict each group at once."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson

from shared.errors import ModelLoadError
from shared.store import FAILED, RUNNING, FinishedChunk, JobStore
from shared.tasks import ChunkMessage
from worker.cache import ModelCache

log = logging.getLogger(__name__)


def run_chunks(store: JobStore, cache: ModelCache, messages: Sequence[ChunkMessage]) -> int:
    """Predict every chunk whose job may still run and record its outputs; return how many ran."""
    groups: dict[tuple[str, str], list[ChunkMessage]] = defaultdict(list)
    statuses = store.claim([(m["job"], m["model"]) for m in messages])
    for message, status in zip(messages, statuses, strict=True):
        if status != RUNNING:
            continue
        if message["inputs"] is None:
            stored = store.inputs(message["job"], message["chunk"])
            if stored is None:  # predicted by an earlier delivery, or the job has ended
                continue
            message = {**message, "inputs": stored}
        groups[(message["model"], message["version"])].append(message)
    for (name, version), group in groups.items():
        try:
            predictor = cache.get(name, version)
        except ModelLoadError as exc:
            for message in group:
                store.end(message["job"], name, FAILED, exc.code, exc.message)
            continue
        try:
            _predict_together(store, predictor.predict, group)
        except Exception:  # one bad job must not fail the others it was batched with
            log.exception("batched predict of %s %s failed; predicting job by job", name, version)
            for message in group:
                _predict_alone(store, predictor.predict, message)
    return sum(len(group) for group in groups.values())


def _predict_together(store: JobStore, predict: Any, group: list[ChunkMessage]) -> None:
    records = [record for message in group for record in message["inputs"] or ()]
    started = time.perf_counter()
    outputs = predict(records)
    share = (time.perf_counter() - started) * 1000 / max(1, len(records))
    finished = []
    offset = 0
    for message in group:
        count = len(message["inputs"] or ())
        ndjson = b"".join(orjson.dumps(output) + b"\n" for output in outputs[offset : offset + count])
        offset += count
        finished.append(FinishedChunk(message["job"], message["chunk"], ndjson, count, share * count))
    store.finish_chunks(finished)


def _predict_alone(store: JobStore, predict: Any, message: ChunkMessage) -> None:
    try:
        _predict_together(store, predict, [message])
    except Exception as exc:  # the model itself refused these inputs
        reason = f"The model failed on this input: {exc}"[:500]
        store.end(message["job"], message["model"], FAILED, "prediction_failed", reason)
