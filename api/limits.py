"""What keeps one key, or a full Redis, from taking the service down: open requests and store capacity."""

from __future__ import annotations

import threading
import time
from collections import Counter

import redis

from shared.errors import QueueFull, RateLimited

# How long a reading of Redis's memory is trusted while it is under half its limit (one INFO a
# second per process costs nothing); past half, every new job reads it afresh.
CAPACITY_TTL_S = 1.0


class OpenRequests:
    """Counts each key's requests open at once in this process and refuses one past the limit."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()

    def enter(self, owner: str) -> None:
        """Count one more open request of the owner, or raise RateLimited when it holds the limit."""
        with self._lock:
            if self._open[owner] >= self._limit:
                raise RateLimited(
                    f"This API key has {self._limit} requests open at once (long-polls, uploads); "
                    "wait for some to finish before sending more.",
                    [{"field": "Authorization", "reason": "open requests per key reached"}],
                    retry_after=1,
                )
            self._open[owner] += 1

    def leave(self, owner: str) -> None:
        """Count one open request of the owner as finished."""
        with self._lock:
            self._open[owner] -= 1
            if self._open[owner] <= 0:
                del self._open[owner]

    def held(self, owner: str) -> int:
        """Return how many requests the owner holds open now."""
        with self._lock:
            return self._open[owner]


class StoreCapacity:
    """Refuses new jobs while Redis is near its maxmemory, so the jobs it holds can still finish."""

    def __init__(self, client: redis.Redis, high_water: float, retry_after: int) -> None:
        self._client = client
        self._high_water = high_water
        self._retry_after = retry_after
        self._read_at = -CAPACITY_TTL_S
        self._ttl = CAPACITY_TTL_S
        self._full = False

    def check(self) -> None:
        """Raise QueueFull when Redis uses more than the high-water share of its maxmemory."""
        now = time.monotonic()
        if now - self._read_at >= self._ttl:
            self._read_at = now
            memory = self._client.info("memory")
            limit, used = int(memory.get("maxmemory", 0)), int(memory["used_memory"])
            self._full = limit > 0 and used > self._high_water * limit
            self._ttl = 0.0 if limit > 0 and used > limit / 2 else CAPACITY_TTL_S
        if self._full:
            raise QueueFull(
                "The job store is nearly full; nothing was accepted. Try again once older jobs expire.",
                [{"field": None, "reason": "job store nearly full"}],
                retry_after=self._retry_after,
            )
