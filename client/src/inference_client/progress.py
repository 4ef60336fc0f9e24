"""Where the command line learns a job's progress: from its events stream, else by polling.

A source yields the job each time it may have changed and stops after it ended; the progress bar
only reads `job.progress` and `job.terminal`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from typing import Protocol

from inference_client._core import JobView
from inference_client.client import Job
from inference_client.errors import InferenceError, WaitTimeout


class ProgressSource(Protocol):
    """Yields a job as it moves, the last time once it has ended."""

    def __iter__(self) -> Iterator[JobView]:
        """Yield the job at every change seen, ending after its terminal state."""
        ...


class PollingProgress:
    """Follows a job by long-polling it: an answer as soon as it ends, else every `interval` seconds."""

    def __init__(self, job: Job, interval: float = 0.5) -> None:
        self.job = job
        self.interval = interval

    def __iter__(self) -> Iterator[JobView]:
        yield self.job
        while not self.job.terminal:
            # A wait that runs out still brought the latest progress with its last long-poll.
            with suppress(WaitTimeout):
                self.job.wait(self.interval)
            yield self.job


class EventsProgress:
    """Follows a job by its events stream (GET /v1/jobs/{id}/events), long-polling it if the stream fails."""

    def __init__(self, job: Job, timeout: float | None = None, interval: float = 0.5) -> None:
        self.job = job
        self.timeout = timeout
        self.interval = interval
        # Why the stream was given up for polling, when it was.
        self.failure: InferenceError | None = None

    def __iter__(self) -> Iterator[JobView]:
        yield self.job
        try:
            for _ in self.job.events(self.timeout):
                yield self.job
        except WaitTimeout:
            raise
        except InferenceError as exc:  # a service without the stream, or a proxy that breaks it
            self.failure = exc
        if not self.job.terminal:
            yield from PollingProgress(self.job, self.interval)
