"""L limit: the example models predicting the workloads' rows in this one process, batched, with no queue."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.chunks import Records, as_rows
from shared.registry import Manifest, Registry
from shared.storage import LocalStorage
from worker.cache import load_predictor
from worker.runtimes.base import Predictor, ndjson

FORMATS = {".onnx": ("onnx", "onnx"), ".skops": ("sklearn", "skops")}


def _rate(call: Callable[[], object], rows_per_call: int, seconds: float) -> dict[str, float]:
    """Call repeatedly for about the given seconds and return rows a second and milliseconds a call."""
    call()  # the first call pays for lazy set-up inside the runtime
    calls = 0
    started = time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        call()
        calls += 1
    elapsed = time.perf_counter() - started
    return {
        "rows_per_s": round(calls * rows_per_call / elapsed),
        "ms_per_call": round(elapsed * 1000 / calls, 4),
    }


def variants(manifest: Manifest) -> list[Manifest]:
    """Return the manifest once per artifact it ships, each set to be served by that artifact's runtime."""
    found = []
    for artifact in manifest.artifacts:
        kind = FORMATS.get(Path(artifact).suffix)
        if kind is not None:
            update = {"runtime": kind[0], "artifact": artifact, "artifact_format": kind[1]}
            found.append(manifest.model_copy(update=update))
    return found


def _worker_path(predictor: Predictor, records: Records) -> bytes:
    """Do what a worker does with a chunk's records: score them and write their NDJSON outputs."""
    rows = as_rows(predictor.manifest, records)
    return ndjson(predictor.manifest, predictor.scores(rows))


def measure(root: Path, rows: dict[str, list[Any]], batch_size: int, seconds: float) -> dict[str, Any]:
    """Return rows a second of each model and runtime, batched and one record a call, loaded as workers do."""
    registry = Registry(LocalStorage(root))
    registry.refresh()
    results: dict[str, Any] = {}
    for manifest in registry.all():
        records = rows.get(manifest.name)
        if not records:
            continue
        listed = [records[i % len(records)] for i in range(batch_size)]
        # A bulk chunk reaches the worker already as a float32 array; a single record as a JSON list.
        batch = as_rows(manifest, listed)
        for variant in variants(manifest):
            predictor = load_predictor(root, variant)
            scores = predictor.scores(batch)
            timed = {
                "batched": _rate(functools.partial(_worker_path, predictor, batch), batch_size, seconds),
                "single": _rate(functools.partial(_worker_path, predictor, listed[:1]), 1, seconds / 2),
                "scores": _rate(functools.partial(predictor.scores, batch), batch_size, seconds / 2),
                "ndjson": _rate(functools.partial(ndjson, variant, scores), batch_size, seconds / 2),
            }
            results[f"{manifest.name}/{variant.runtime}"] = {
                "served": variant.runtime == manifest.runtime,
                "batch": batch_size,
                "batched_rows_per_s": timed["batched"]["rows_per_s"],
                "batched_ms_per_call": timed["batched"]["ms_per_call"],
                "single_record_calls_per_s": timed["single"]["rows_per_s"],
                "single_record_ms": timed["single"]["ms_per_call"],
                "batch_phases_ms": {
                    "model_scores": timed["scores"]["ms_per_call"],
                    "ndjson_outputs": timed["ndjson"]["ms_per_call"],
                },
            }
    return results
