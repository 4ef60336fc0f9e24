"""Watching what the workers serve: each record binned by its version's reference, a sample logged.

The counts of a batch are made at once with numpy, with no loop over its records (a text model's
tokens, read one text at a time, are counted on a random few of the batch's texts), and go to the
job store with the chunks' outputs, in the same round trip (shared/watch.py). Numbers are compared
in float32, as the records are, with the edges rounded to float32 the same way, so a value equal to
an edge falls in the bin it fell in at publish. Watching never fails a prediction: what cannot be
counted is logged and left out.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import redis

from shared.chunks import Records, as_rows
from shared.drift import OOV, REFERENCE_FILE, ROWS, TOKENS, bucket_key, feature_field, prediction_field
from shared.prediction_log import PredictionLog, stream_key
from shared.registry import Manifest, Registry
from shared.settings import Settings
from shared.tasks import ChunkMessage
from shared.watch import ChunkWatch
from worker.reference import text_vocabulary
from worker.runtimes.base import Predictor, Scores

log = logging.getLogger(__name__)

# A reference that could not be read (the storage did not answer) is asked for again after this long.
RETRY_S = 60.0
# Texts of a batch whose tokens are counted, drawn at random: the share outside the vocabulary is a
# ratio of sums, told well enough by a few hundred texts at a fraction of reading them all.
TOKEN_SAMPLE = 200
# Below this many values, comparing each with every edge at once is quicker than one edge at a time.
SMALL_TABLE = 512
NEWLINE = ord("\n")
Indices = npt.NDArray[np.int64]


def _inner_edges(stats: dict[str, Any]) -> npt.NDArray[np.float64]:
    return np.asarray(stats["edges"], dtype=np.float64)


@dataclass(frozen=True)
class Bins:
    """A version's reference made ready to count with: its bins' edges and every counter's field name.

    Field indices run: each feature's bins, the predictions' labels or bins, then rows, and for a
    text model its out-of-vocabulary and all tokens.
    """

    fields: npt.NDArray[np.object_]
    # Numeric models: the features' inner edges in float32 (records are), padded with +inf.
    edges: npt.NDArray[np.float32] | None
    # Text models: the length bins' edges, and the vectorizer's analyzer and vocabulary if it has one.
    lengths: npt.NDArray[np.float64] | None
    vocabulary: tuple[Any, set[str]] | None
    values: npt.NDArray[np.float64] | None
    # The index of each feature's first bin, and of the predictions' first.
    offsets: npt.NDArray[np.int64]
    first_prediction: int

    @classmethod
    def of(cls, reference: dict[str, Any], manifest: Manifest, estimator: Any) -> Bins | None:
        """Return the bins of a version's reference, or None when it does not describe the version."""
        features = reference["features"]
        if list(features) != manifest.features:
            log.warning("%s %s: reference.json names other features", manifest.name, manifest.version)
            return None
        fields = [feature_field(i, b) for i, s in enumerate(features.values()) for b in range(_bins(s))]
        edges = lengths = values = None
        vocabulary = None
        if manifest.is_text:
            lengths = _inner_edges(features["text"]["length"])
            if features["text"].get("out_of_vocabulary_share") is not None and estimator is not None:
                vocabulary = text_vocabulary(estimator)
        else:
            widest = max((len(s["edges"]) for s in features.values()), default=0)
            edges = np.full((len(features), widest), np.inf, dtype=np.float32)
            for row, stats in enumerate(features.values()):
                edges[row, : len(stats["edges"])] = stats["edges"]
        offsets = np.cumsum([0] + [_bins(stats) for stats in features.values()])[:-1].astype(np.int64)
        predictions = reference["predictions"]
        first = len(fields)
        if "labels" in predictions:
            fields += [prediction_field(k) for k in range(len(predictions["labels"]))]
        else:
            values = _inner_edges(predictions["values"])
            fields += [prediction_field(k) for k in range(len(values) + 1)]
        fields += [ROWS, OOV, TOKENS] if vocabulary is not None else [ROWS]
        return cls(np.asarray(fields, dtype=object), edges, lengths, vocabulary, values, offsets, first)

    def counts(
        self, records: Records, scores: Scores, chunk_of: Indices, chunks: int, rng: np.random.Generator
    ) -> tuple[Indices, Indices, Indices]:
        """Return a batch's counts that are not 0 as arrays of chunk, field index and count, by chunk."""
        width = len(self.fields)
        rows = np.full((len(chunk_of), 1), width - (3 if self.vocabulary is not None else 1))
        index = np.hstack([self._feature_bins(records), self._prediction_bins(scores), rows])
        keys = (chunk_of[:, None] * width + index).ravel() if chunks > 1 else index.ravel()
        weights = None
        if self.vocabulary is not None:
            # Tokens are read one text at a time: a random few of the batch's texts tell their share.
            few = rng.permutation(len(chunk_of))[:TOKEN_SAMPLE]
            outside, tokens = self._tokens([records[i] for i in few.tolist()])
            keys = np.concatenate(
                [keys, chunk_of[few] * width + width - 2, chunk_of[few] * width + width - 1]
            )
            weights = np.concatenate([np.ones(len(index) * index.shape[1]), outside, tokens])
        if len(keys) < chunks * width:  # many small chunks: only what was seen is summed
            seen, inverse = np.unique(keys, return_inverse=True)
            found = np.bincount(inverse, weights=weights)
        else:
            dense = np.bincount(keys, weights=weights, minlength=chunks * width)
            seen = np.flatnonzero(dense)
            found = dense[seen]
        kept = found > 0
        seen = seen[kept]
        return seen // width, seen % width, found[kept].astype(np.int64)

    def _feature_bins(self, records: Records) -> Indices:
        if self.edges is None:
            assert self.lengths is not None
            lengths = np.fromiter(map(len, records), dtype=np.float64, count=len(records))
            return np.searchsorted(self.lengths, lengths, side="left").reshape(-1, 1).astype(np.int64)
        # Bin b holds v with edges[b-1] < v <= edges[b]: its index is the count of edges below v.
        table = np.asarray(records, dtype=np.float32)
        found: Indices
        if table.size < SMALL_TABLE:
            found = (table[:, :, None] > self.edges[None, :, :]).sum(axis=2, dtype=np.int64)
        else:  # a comparison per edge rank, so no array of every value against every edge is made
            below = np.zeros(table.shape, dtype=np.int8)
            for rank in range(self.edges.shape[1]):
                below += table > self.edges[:, rank]
            found = below.astype(np.int64)
        return found + self.offsets[None, :]

    def _prediction_bins(self, scores: Scores) -> Indices:
        found: Indices
        if self.values is None:
            found = np.asarray(scores).argmax(axis=1).astype(np.int64)
        else:
            found = np.searchsorted(self.values, np.asarray(scores).reshape(-1), side="left").astype(np.int64)
        return (found + self.first_prediction).reshape(-1, 1)

    def _tokens(self, texts: Records) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        assert self.vocabulary is not None
        analyze, vocabulary = self.vocabulary
        tokens = [analyze(text) for text in texts]
        outside = [sum(token not in vocabulary for token in found) for found in tokens]
        return np.asarray(outside, dtype=np.float64), np.asarray([len(t) for t in tokens], dtype=np.float64)


def _bins(stats: dict[str, Any]) -> int:
    """Return how many bins a feature's reference statistics have (a text's: its length's)."""
    return len(stats["length"]["shares"] if "length" in stats else stats["shares"])


def record_json(manifest: Manifest, records: Records, index: int) -> bytes:
    """Return one record as the JSON object of the API: its values by feature name."""
    if manifest.is_text:
        return orjson.dumps({"text": records[index]})
    # orjson writes a float32 array's values as short as float32 allows (5.1, not 5.099999904632568).
    row = np.asarray(records[index], dtype=np.float32)
    values = orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
    return (
        b"{" + b",".join(n + v for n, v in zip(_keys(tuple(manifest.features)), values, strict=True)) + b"}"
    )


@functools.lru_cache(maxsize=64)
def _keys(features: tuple[str, ...]) -> list[bytes]:
    """Return each feature's name as a JSON object key, colon included."""
    return [orjson.dumps(name) + b":" for name in features]


class Watcher:
    """Counts the records a worker serves for drift and samples them into the prediction log."""

    def __init__(self, registry: Registry, settings: Settings, client: redis.Redis) -> None:
        self.registry = registry
        self.rate = settings.prediction_log_rate
        self.log_max = settings.prediction_log_max
        self.log = PredictionLog(client, settings.prediction_log_max)
        # Shares of records to log, not secrets.
        self._random = np.random.default_rng()
        self._bins: dict[tuple[str, str], tuple[Bins | None, float]] = {}

    def bins(self, predictor: Predictor) -> Bins | None:
        """Return the bins of a served version's reference, read once, or None when it has none."""
        manifest = predictor.manifest
        key = (manifest.name, manifest.version)
        found, retry_at = self._bins.get(key, (None, 0.0))
        if found is not None or time.monotonic() < retry_at:
            return found
        try:
            raw = self.registry.read_file(manifest, REFERENCE_FILE)
            found = (
                None
                if raw is None
                else Bins.of(orjson.loads(raw), manifest, getattr(predictor, "estimator", None))
            )
        except Exception:  # a reference that cannot be read or understood costs its counts, not the job
            log.exception("the drift reference of %s %s could not be read", *key)
            self._bins[key] = (None, time.monotonic() + RETRY_S)
            return None
        self._bins[key] = (found, float("inf"))
        return found

    def watch(
        self,
        predictor: Predictor,
        records: Records,
        scores: Scores,
        sizes: Sequence[int],
        outputs: Sequence[bytes],
    ) -> list[ChunkWatch | None]:
        """Return what each chunk of a batch adds to the drift counters and the log (None: nothing)."""
        manifest = predictor.manifest
        chunk_of = np.repeat(np.arange(len(sizes)), sizes)
        pairs = self._counts(predictor, records, scores, chunk_of, len(sizes))
        entries = self._sampled(manifest, records, chunk_of, sizes, outputs)
        counters = bucket_key(manifest.name, manifest.version, time.time())
        log_key = stream_key(manifest.name)
        return [
            ChunkWatch(counters, log_key, self.log_max, counts, logged) if counts or logged else None
            for counts, logged in zip(pairs, entries, strict=True)
        ]

    def _counts(
        self, predictor: Predictor, records: Records, scores: Scores, chunk_of: Indices, chunks: int
    ) -> list[list[str | int]]:
        bins = self.bins(predictor)
        if bins is None or not len(chunk_of):
            return [[] for _ in range(chunks)]
        rows, columns, found = bins.counts(records, scores, chunk_of, chunks, self._random)
        pairs = np.empty(2 * len(rows), dtype=object)
        pairs[0::2] = bins.fields[columns]
        pairs[1::2] = found.tolist()
        bounds = (2 * np.searchsorted(rows, np.arange(chunks + 1))).tolist()
        return [pairs[start:end].tolist() for start, end in itertools.pairwise(bounds)]

    def _sampled(
        self,
        manifest: Manifest,
        records: Records,
        chunk_of: Indices,
        sizes: Sequence[int],
        outputs: Sequence[bytes],
    ) -> list[list[bytes]]:
        entries: list[list[bytes]] = [[] for _ in sizes]
        if self.rate <= 0 or not len(chunk_of):
            return entries
        picked = np.flatnonzero(self._random.random(len(chunk_of)) < self.rate).tolist()
        if not picked:
            return entries
        starts = np.cumsum([0, *sizes]).tolist()
        ends: dict[int, list[int]] = {}
        for index in picked:
            chunk = int(chunk_of[index])
            if chunk not in ends:  # where each line of the chunk's NDJSON ends
                newlines = np.flatnonzero(np.frombuffer(outputs[chunk], dtype=np.uint8) == NEWLINE)
                ends[chunk] = [-1, *newlines.tolist()]
            line = index - starts[chunk]
            output = outputs[chunk][ends[chunk][line] + 1 : ends[chunk][line + 1]]
            entries[chunk] += [record_json(manifest, records, index), output]
        return entries

    def failed(self, message: ChunkMessage, code: str, text: str, records: Records | None = None) -> None:
        """Add a job the worker ended failed to the log, with the first record of its chunk if known."""
        try:
            first = self._first_record(message, records)
            self.log.failed(message["job"], message["model"], first or b"null", code, text)
        except Exception:  # the job has ended; its log entry is all that is lost
            log.exception("job %s failed but could not be added to the prediction log", message["job"])

    def _first_record(self, message: ChunkMessage, records: Records | None) -> bytes | None:
        if records is None and message["inputs"]:
            records = message["inputs"][:1]
        if records is None or not len(records):
            return None
        manifest = self.registry.get(message["model"], message["version"])
        return record_json(manifest, as_rows(manifest, records[:1]), 0)
