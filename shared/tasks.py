"""Task names and message shapes shared by the API, which publishes, and the workers, which consume."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

PREDICT = "infer.predict"
# Shadow predictions travel on their own queue, `<queue>.shadow`, which the workers consume too.
SHADOW = "infer.shadow"
PUBLISH = "infer.publish"


class ChunkMessage(TypedDict):
    """One chunk of one job: which records of which model version to predict.

    A small job's records travel in the message; a bulk job's wait in the job store (inputs None).
    shadow names the version that also predicts the records once they were answered, if one does.
    """

    job: str
    model: str
    version: str
    chunk: int
    inputs: list[Any] | None
    shadow: NotRequired[str]


class ShadowMessage(TypedDict):
    """A served chunk the shadow version predicts too, its outputs only compared with the served ones."""

    job: str
    model: str
    version: str
    shadow: str
    chunk: int
    inputs: list[Any]


def shadow_queue(queue: str) -> str:
    """Return the name of the queue of a jobs' queue's shadow predictions."""
    return f"{queue}.shadow"


class PublishMessage(TypedDict):
    """A publish job: the upload kept under the job's id becomes this version of this model."""

    job: str
    model: str
    version: str
