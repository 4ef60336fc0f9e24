"""Where the command line learns a job's progress: by polling now, by the events stream later.

A source yields the job each time it may have changed and stops after it ended; the progress bar
only reads `job.progress` and `job.terminal`, so an SSE source (GET /v1/jobs/{id}/events) can
replace `PollingProgress` without touching the bar.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from typing import Protocol

from inference_client._core import JobView
from inference_client.client import Job
from inference_client.errors import WaitTimeout


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
