"""A model's routing: which versions serve its traffic by weight, and which one shadows it, kept in Redis.

Keys: ``routing:{name}`` the routing as JSON; ``shadow:{name}:{version}`` a hash of the shadow
version's comparisons with the served outputs (records ``compared`` and ``agreed``, and
``abs_diff_sum``); ``routing-lock:{name}`` held while a routing is changed or a version retired.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import Conflict
from shared.registry import VERSION_RE, version_key

TOTAL_WEIGHT = 100
LOCK_MS = 10_000
LOCK_WAIT_S = 5.0


class Shadow(BaseModel):
    """The version that also predicts a share of routed jobs, its outputs only compared."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=VERSION_RE.pattern, description="The shadow version.", examples=["1.2.0"])
    sample: float = Field(
        gt=0, le=1, description="The share of routed jobs it also predicts.", examples=[0.1]
    )


class RoutingChange(BaseModel):
    """What an admin sets: integer weights by version summing to 100, and an optional shadow."""

    model_config = ConfigDict(extra="forbid")

    routes: dict[str, int] = Field(
        description="Weight of each version, integers from 0 to 100 that sum to 100.",
        examples=[{"1.0.0": 90, "1.1.0": 10}],
    )
    shadow: Shadow | None = Field(default=None, description="The shadow version, or null for none.")

    @model_validator(mode="after")
    def _weights(self) -> RoutingChange:
        bad = [v for v in self.routes if not VERSION_RE.match(v)]
        if bad:
            raise ValueError(f"routes are keyed by version (major.minor.patch), not {bad[0][:32]!r}")
        if any(not 0 <= weight <= TOTAL_WEIGHT for weight in self.routes.values()):
            raise ValueError(f"each weight is an integer from 0 to {TOTAL_WEIGHT}")
        total = sum(self.routes.values())
        if total != TOTAL_WEIGHT:
            raise ValueError(f"the weights sum to {total}, not {TOTAL_WEIGHT}")
        return self


class Routing(RoutingChange):
    """A model's routing as stored and answered, with when and by whom it was last set."""

    updated_at: str = Field(description="When it was set (RFC 3339, UTC).")
    updated_by: str = Field(description="The owner id of the admin key that set it.")

    def heaviest(self) -> str:
        """Return the version with the largest weight (the newest of equals): the model's default."""
        return max(self.routes, key=lambda v: (self.routes[v], version_key(v)))

    def routed(self, version: str) -> bool:
        """Tell whether a version gets traffic or shadows it."""
        return self.routes.get(version, 0) > 0 or (self.shadow is not None and self.shadow.version == version)


def routing_key(name: str) -> str:
    """Return the Redis key of a model's routing."""
    return f"routing:{name}"


def shadow_key(name: str, version: str) -> str:
    """Return the Redis key of a shadow version's comparison counters."""
    return f"shadow:{name}:{version}"


def read_routing(client: redis.Redis, name: str) -> Routing | None:
    """Return a model's routing, or None when it has none."""
    raw = client.get(routing_key(name))
    return Routing.model_validate_json(raw) if raw else None


def write_routing(client: redis.Redis, name: str, routing: Routing, previous: Routing | None) -> None:
    """Store a model's routing; a version that starts shadowing starts with fresh comparison counters."""
    pipe = client.pipeline(transaction=True)
    pipe.set(routing_key(name), routing.model_dump_json())
    shadow = routing.shadow
    if shadow is not None and (
        previous is None or previous.shadow is None or previous.shadow.version != shadow.version
    ):
        pipe.delete(shadow_key(name, shadow.version))
    pipe.execute()


@contextmanager
def model_lock(client: redis.Redis, name: str) -> Iterator[None]:
    """Hold a model's routing lock, so a routing change and a retirement never cross."""
    key, token = f"routing-lock:{name}", secrets.token_hex(8)
    deadline = time.monotonic() + LOCK_WAIT_S
    while not client.set(key, token, nx=True, px=LOCK_MS):
        if time.monotonic() > deadline:
            raise Conflict(
                f"Another change of model {name}'s routing or versions is under way; try again shortly.",
                [{"field": "name", "reason": "routing locked"}],
            )
        time.sleep(0.05)
    try:
        yield
    finally:
        # Only our own lock: one that outlived LOCK_MS may be another's by now.
        if client.get(key) in (token, token.encode()):
            client.delete(key)


def count_comparisons(
    client: redis.Redis, name: str, version: str, compared: int, agreed: int, abs_diff: float
) -> None:
    """Add a batch of shadow comparisons to the shadow version's counters, in one round trip."""
    key = shadow_key(name, version)
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(key, "compared", compared)
    pipe.hincrby(key, "agreed", agreed)
    pipe.hincrbyfloat(key, "abs_diff_sum", abs_diff)
    pipe.execute()


def comparisons(client: redis.Redis, name: str, version: str) -> tuple[int, int, float]:
    """Return a shadow version's records compared, those that agreed and the sum of absolute differences."""
    raw = client.hmget(shadow_key(name, version), ["compared", "agreed", "abs_diff_sum"])
    compared, agreed, diff = (value or 0 for value in raw)
    return int(compared), int(agreed), float(diff)
