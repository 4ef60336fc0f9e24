"""Long-poll waits and events streams: one Redis subscription per process wakes every request on a job."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import redis

from shared.store import CHANGED_CHANNEL, DONE_CHANNEL

log = logging.getLogger(__name__)

# A missed announcement (during a reconnect) costs at most this long a wait.
RECHECK_S = 1.0


class Watch:
    """One request's interest in one job, registered before it looks, so no announcement is missed.

    ending is the job's end as its announcement carried it, once one came.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.ending: str | None = None

    def wake(self, ending: str | None) -> None:
        """Take the job's announced end and wake the request."""
        self.ending = ending
        self._event.set()

    def wait(self, timeout: float, finished: Callable[[], bool]) -> None:
        """Block until the job's end is announced or the timeout passes.

        finished() is asked only when no announcement came for a while, in case one was missed
        while the subscription was being made again.
        """
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if self._event.wait(min(remaining, RECHECK_S)) or finished():
                return


class Follow:
    """One events stream's interest in one job: woken at each announced change and at its end."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wake(self) -> None:
        """Wake the stream: the job may have changed."""
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Block until the job may have changed or the timeout passes; tell whether it may have."""
        woken = self._event.wait(timeout)
        # Cleared before the caller reads the job: a change announced after this wakes the next wait.
        self._event.clear()
        return woken


_Interest = TypeVar("_Interest", Watch, Follow)


class CompletionWaiter:
    """Wakes requests waiting on a job when a worker announces that the job has changed or ended."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._lock = threading.Lock()
        # Long-polls wake only at a job's end; events streams also at each change short of it.
        self._waiting: dict[str, set[Watch]] = defaultdict(set)
        self._following: dict[str, set[Follow]] = defaultdict(set)
        self._listener: threading.Thread | None = None

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Watch]:
        """Register interest in a job's end for the duration of the block."""
        watch = Watch()
        with self._registered(self._waiting, job_id, watch):
            yield watch

    @contextmanager
    def follow(self, job_id: str) -> Iterator[Follow]:
        """Register interest in every change of a job for the duration of the block."""
        follow = Follow()
        with self._registered(self._following, job_id, follow):
            yield follow

    @contextmanager
    def _registered(
        self, table: dict[str, set[_Interest]], job_id: str, interest: _Interest
    ) -> Iterator[None]:
        self._ensure_listener()
        with self._lock:
            table[job_id].add(interest)
        try:
            yield
        finally:
            with self._lock:
                interests = table.get(job_id)
                if interests is not None:
                    interests.discard(interest)
                    if not interests:
                        del table[job_id]

    def _ensure_listener(self) -> None:
        with self._lock:
            if self._listener is None or not self._listener.is_alive():
                self._listener = threading.Thread(target=self._listen, name="job-waiter", daemon=True)
                self._listener.start()

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(DONE_CHANNEL, CHANGED_CHANNEL)
                # Changes announced while there was no subscription are lost: every stream looks again.
                self._wake_followers()
                for message in pubsub.listen():
                    if str(message["channel"]) == DONE_CHANNEL:
                        job_id, _, ending = str(message["data"]).partition(" ")
                        self._wake(job_id, True, ending or None)
                    else:
                        self._wake(str(message["data"]), False)
            except Exception as exc:  # Redis went away: subscribe again once it is back
                log.warning("job-done subscription lost: %s", exc)
                time.sleep(RECHECK_S)

    def _wake(self, job_id: str, ended: bool, ending: str | None = None) -> None:
        """Wake whoever follows the job and, at its end, whoever waits for it, with the end announced."""
        with self._lock:
            follows = list(self._following.get(job_id, ()))
            watches = list(self._waiting.get(job_id, ())) if ended else []
        for follow in follows:
            follow.wake()
        for watch in watches:
            watch.wake(ending)

    def _wake_followers(self) -> None:
        with self._lock:
            follows = [follow for follows in self._following.values() for follow in follows]
        for follow in follows:
            follow.wake()
