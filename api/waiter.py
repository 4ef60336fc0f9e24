"""Long-poll waits: one Redis subscription per process wakes every request waiting on a job."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from shared.store import DONE_CHANNEL

log = logging.getLogger(__name__)

# A missed announcement (during a reconnect) costs at most this long a wait.
RECHECK_S = 1.0


class Watch:
    """One request's interest in one job, registered before it looks, so no announcement is missed."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def wait(self, timeout: float, finished: Callable[[], bool]) -> None:
        """Block until the job's end is announced or the timeout passes.

        finished() is asked only when no announcement came for a while, in case one was missed
        while the subscription was being made again.
        """
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if self._event.wait(min(remaining, RECHECK_S)) or finished():
                return


class CompletionWaiter:
    """Wakes requests waiting on a job when a worker announces that the job has ended."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._waiting: dict[str, set[threading.Event]] = defaultdict(set)
        self._listener: threading.Thread | None = None

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Watch]:
        """Register interest in a job for the duration of the block."""
        self._ensure_listener()
        event = threading.Event()
        with self._lock:
            self._waiting[job_id].add(event)
        try:
            yield Watch(event)
        finally:
            with self._lock:
                events = self._waiting.get(job_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._waiting[job_id]

    def _ensure_listener(self) -> None:
        with self._lock:
            if self._listener is None or not self._listener.is_alive():
                self._listener = threading.Thread(target=self._listen, name="job-waiter", daemon=True)
                self._listener.start()

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(DONE_CHANNEL)
                for message in pubsub.listen():
                    self._wake(str(message["data"]))
            except Exception as exc:  # Redis went away: subscribe again once it is back
                log.warning("job-done subscription lost: %s", exc)
                time.sleep(RECHECK_S)

    def _wake(self, job_id: str) -> None:
        with self._lock:
            events = list(self._waiting.get(job_id, ()))
        for event in events:
            event.set()
