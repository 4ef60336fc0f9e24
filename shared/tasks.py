"""Task names and message shapes shared by the API, which publishes, and the workers, which consume."""

from __future__ import annotations

from typing import Any, TypedDict

PREDICT = "infer.predict"
PUBLISH = "infer.publish"


class ChunkMessage(TypedDict):
    """One chunk of one job: which records of which model version to predict.

    A small job's records travel in the message; a bulk job's wait in the job store (inputs None).
    """

    job: str
    model: str
    version: str
    chunk: int
    inputs: list[Any] | None


class PublishMessage(TypedDict):
    """A publish job: the upload kept under the job's id becomes this version of this model."""

    job: str
    model: str
    version: str
