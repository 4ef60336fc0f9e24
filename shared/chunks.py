"""How a chunk's records are kept in Redis: float32 bytes for numeric models, JSON for text ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from shared.registry import Manifest

Records = list[Any] | npt.NDArray[np.float32]


def as_rows(manifest: Manifest, records: Records) -> Records:
    """Return numeric records as a 2-D float32 array (a no-op for one already), text ones as a list."""
    if manifest.is_text:
        return list(records)
    return np.asarray(records, dtype=np.float32).reshape(len(records), len(manifest.features))


def encode_records(manifest: Manifest, records: Records) -> bytes:
    """Return the bytes that keep a chunk's records in the job store."""
    if manifest.is_text:
        return orjson.dumps(list(records))
    rows = as_rows(manifest, records)
    assert isinstance(rows, np.ndarray)
    return rows.tobytes()


def decode_records(manifest: Manifest, raw: bytes) -> Records:
    """Return the records a chunk's stored bytes hold."""
    if manifest.is_text:
        decoded: list[Any] = orjson.loads(raw)
        return decoded
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, len(manifest.features))
