"""How the reaper groups the chunks it publishes again."""

from __future__ import annotations

from shared.reaper import _batches
from shared.tasks import ChunkMessage


def _message(job: str, chunk: int) -> ChunkMessage:
    return ChunkMessage(job=job, model="iris", version="1.0.0", chunk=chunk, inputs=None)


def test_small_jobs_travel_together_and_a_bulk_jobs_chunks_alone() -> None:
    """Lost single-chunk jobs share messages of at most 64; each chunk of a bulk job gets its own."""
    small = [_message(f"s{i}", 0) for i in range(70)]
    bulk = [_message("b", 0), _message("b", 1), _message("b", 2)]
    batches = _batches(small + bulk)
    assert [len(b) for b in batches] == [64, 6, 1, 1, 1]
    assert [b[0]["chunk"] for b in batches[2:]] == [0, 1, 2]
