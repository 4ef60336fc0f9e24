"""Predicting chunks of jobs: claim them, group them by model version, predict each group at once."""

from __future__ import annotations

import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import redis

from shared.chunks import Records, as_rows, decode_records
from shared.errors import ModelLoadError
from shared.store import FAILED, RUNNING, FinishedChunk, JobStore
from shared.tasks import ChunkMessage
from shared.watch import ChunkWatch
from worker.cache import ModelCache
from worker.drift import Watcher
from worker.runtimes.base import Predictor, Scores, ndjson

log = logging.getLogger(__name__)

Work = tuple[ChunkMessage, Records]


def run_chunks(
    store: JobStore, cache: ModelCache, messages: Sequence[ChunkMessage], watcher: Watcher | None = None
) -> int:
    """Predict every chunk whose job may still run and record its outputs; return how many ran.

    With a watcher, the served records are counted for drift and sampled, failed jobs logged.
    """
    claimed: dict[tuple[str, str], list[ChunkMessage]] = defaultdict(list)
    statuses = store.claim([(m["job"], m["model"]) for m in messages])
    for message, status in zip(messages, statuses, strict=True):
        if status == RUNNING:
            claimed[(message["model"], message["version"])].append(message)
    ran = 0
    for (name, version), group in claimed.items():
        try:
            predictor = cache.get(name, version)
        except ModelLoadError as exc:
            for message in group:
                ended = store.end(message["job"], name, FAILED, exc.code, exc.message)
                if watcher is not None and ended == "ended":
                    watcher.failed(message, exc.code, exc.message)
            continue
        work = _with_records(store, predictor, group)
        ran += len(work)
        try:
            _predict_together(store, predictor, work, watcher)
        except redis.RedisError:
            raise  # the job store is away: the task hands its message back
        except Exception:  # one bad job must not fail the others it was batched with
            log.exception("batched predict of %s %s failed; predicting job by job", name, version)
            for item in work:
                _predict_alone(store, predictor, item, watcher)
    return ran


def _with_records(store: JobStore, predictor: Predictor, group: list[ChunkMessage]) -> list[Work]:
    """Pair each message with its records, from the message or, for a bulk chunk, the store."""
    work: list[Work] = []
    for message in group:
        if message["inputs"] is not None:
            work.append((message, as_rows(predictor.manifest, message["inputs"])))
            continue
        raw = store.inputs(message["job"], message["chunk"])
        if raw is not None:  # else an earlier delivery predicted it, or the job has ended
            work.append((message, decode_records(predictor.manifest, raw)))
    return work


def _predict_together(
    store: JobStore, predictor: Predictor, work: list[Work], watcher: Watcher | None = None
) -> None:
    parts = [records for _, records in work]
    if predictor.manifest.is_text:
        records: Records = [record for part in parts for record in part]
    else:
        records = np.concatenate(parts) if len(parts) > 1 else parts[0]
    started = time.perf_counter()
    scores = predictor.scores(records)
    share = (time.perf_counter() - started) * 1000 / max(1, len(records))
    sizes = [len(part) for part in parts]
    offsets = np.cumsum([0, *sizes]).tolist()
    lines = [ndjson(predictor.manifest, scores[start:end]) for start, end in itertools.pairwise(offsets)]
    watches = _watches(watcher, predictor, records, scores, sizes, lines)
    store.finish_chunks(
        [
            FinishedChunk(message["job"], message["chunk"], out, count, share * count, watch)
            for (message, _), out, count, watch in zip(work, lines, sizes, watches, strict=True)
        ]
    )


def _watches(
    watcher: Watcher | None,
    predictor: Predictor,
    records: Records,
    scores: Scores,
    sizes: list[int],
    lines: list[bytes],
) -> list[ChunkWatch | None]:
    """Return each chunk's drift counts and log samples; none when watching fails, which it must not."""
    if watcher is not None:
        try:
            return watcher.watch(predictor, records, scores, sizes, lines)
        except Exception:  # counting is side work: the answers are recorded without it
            log.exception(
                "the records of %s %s were not counted", predictor.manifest.name, predictor.manifest.version
            )
    return [None] * len(sizes)


def _predict_alone(store: JobStore, predictor: Predictor, item: Work, watcher: Watcher | None) -> None:
    try:
        _predict_together(store, predictor, [item], watcher)
    except redis.RedisError:
        raise
    except Exception as exc:  # the model itself refused these inputs
        message = item[0]
        reason = f"The model failed on this input: {exc}"[:500]
        ended = store.end(message["job"], message["model"], FAILED, "prediction_failed", reason)
        if watcher is not None and ended == "ended":
            watcher.failed(message, "prediction_failed", reason, item[1])
