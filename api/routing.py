"""Which version serves a job that names none: the model's routing, read from Redis at most once a second.

Each API process keeps every model's routing for CACHE_S, so a PUT takes effect on every process
within that; a model without a routing sends all its traffic to the registry's default version.
"""

from __future__ import annotations

import random
import threading
import time

import redis

from shared.registry import Registry
from shared.routing import Routing, read_routing

# Below the contract's one second, so a change is seen within it however the reads fall.
CACHE_S = 0.5


class RoutingTable:
    """The routings of one API process, each re-read from Redis once it is CACHE_S old."""

    def __init__(self, client: redis.Redis, registry: Registry) -> None:
        self._client = client
        self._registry = registry
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, Routing | None]] = {}

    def routing(self, name: str) -> Routing | None:
        """Return a model's routing as read at most CACHE_S ago, or None when it has none.

        An unpublished model raises UnknownModel first, so only published names are ever cached.
        """
        self._registry.default_version(name)
        now = time.monotonic()
        with self._lock:
            found = self._cached.get(name)
        if found is not None and now - found[0] < CACHE_S:
            return found[1]
        routing = read_routing(self._client, name)
        with self._lock:
            self._cached[name] = (now, routing)
        return routing

    def forget(self, name: str) -> None:
        """Drop a model's cached routing, so this process reads it again at once."""
        with self._lock:
            self._cached.pop(name, None)

    def default_version(self, name: str) -> str:
        """Return the model's default: its heaviest routed version, else the registry's default."""
        routing = self.routing(name)
        return routing.heaviest() if routing is not None else self._registry.default_version(name)

    def choose(self, name: str) -> str:
        """Return the version that serves a job naming none, drawn by the routing's weights."""
        routing = self.routing(name)
        if routing is None:
            return self._registry.default_version(name)
        versions = list(routing.routes)
        # The module's generator: Python seeds it afresh in every forked process. Shares, not secrets.
        return random.choices(versions, weights=[routing.routes[v] for v in versions])[0]  # noqa: S311

    def shadow(self, name: str) -> str | None:
        """Return the shadow version when this routed job is drawn into its sample, else None."""
        routing = self.routing(name)
        if routing is None or routing.shadow is None:
            return None
        return routing.shadow.version if random.random() < routing.shadow.sample else None  # noqa: S311
