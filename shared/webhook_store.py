"""Webhook deliveries in Redis: leased by one sender at a time, each attempt recorded, listed per job.

The job store's scripts enqueue a delivery in the same step as the change it announces
(``store_scripts._WEBHOOK``). Keys, each living as long as its job: ``webhook:{delivery}`` a hash
(job, owner, event, url, state, created_at, the job's record as the event found it, the current
lease); ``webhook:{delivery}:attempts`` a list of the attempts as JSON; ``job:{id}:webhooks`` the
job's delivery ids in order. ``webhooks:due`` is a sorted set of pending deliveries by the time
they are next due; a leased delivery's score is the end of its lease, so the deliveries of a
sender that died come due again once their lease runs out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis

from shared.job_view import rfc3339

DUE = "webhooks:due"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

# KEYS: due set; ARGV: now, lease end, most to lease, lease token
_LEASE = """#!lua flags=allow-oom
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local leased = {}
for _, id in ipairs(due) do
  local key = 'webhook:' .. id
  local found = redis.call('HMGET', key, 'state', 'job', 'owner', 'event', 'url', 'created_at', 'snapshot')
  if found[1] ~= 'pending' then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', key, 'lease', ARGV[4])
    leased[#leased + 1] = {id, found[2], found[3], found[4], found[5], found[6], found[7],
      redis.call('LLEN', key .. ':attempts')}
  end
end
return leased
"""

# KEYS: due set; ARGV: delivery id, lease token, attempt JSON or '' (handed back untried), state, next due
_SETTLE = """#!lua flags=allow-oom
local key = 'webhook:' .. ARGV[1]
if redis.call('HGET', key, 'lease') ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' then
  local attempts = key .. ':attempts'
  redis.call('RPUSH', attempts, ARGV[3])
  local ttl = redis.call('PTTL', key)
  if ttl > 0 then redis.call('PEXPIRE', attempts, ttl) end
end
redis.call('HSET', key, 'state', ARGV[4], 'lease', '')
if ARGV[4] == 'pending' then
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""


@dataclass(frozen=True)
class Leased:
    """A delivery this sender holds the lease of: what to send, where, and how many tries came before."""

    id: str
    job: str
    owner: str
    event: str
    url: str
    created_at: float
    snapshot: dict[str, str]
    tried: int
    token: str


@dataclass(frozen=True)
class Attempt:
    """One try at a delivery: when, the HTTP status or the error, and how long it took."""

    at: float
    status: int | None
    error: str | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        """Tell whether the receiver took the delivery (a 2xx answer)."""
        return self.status is not None and 200 <= self.status < 300

    def view(self) -> dict[str, Any]:
        """Return the attempt as the deliveries route lists it."""
        return {
            "at": rfc3339(self.at),
            "status": self.status,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 3),
        }


def _snapshot(encoded: str) -> dict[str, str]:
    """Return the job's hash fields from the flat [field, value, ...] list the script encoded."""
    flat = orjson.loads(encoded)
    return {str(k): str(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}


class DeliveryStore:
    """Leases due deliveries and records their attempts, each step one atomic script."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._lease = client.register_script(_LEASE)
        self._settle = client.register_script(_SETTLE)

    def lease(self, now: float, lease_s: float, count: int) -> list[Leased]:
        """Take up to count due deliveries for lease_s seconds; no other sender gets them meanwhile."""
        token = secrets.token_hex(8)
        rows = cast(
            list[list[Any]], self._lease(keys=[DUE], args=[repr(now), repr(now + lease_s), count, token])
        )
        return [
            Leased(
                str(i),
                str(job),
                str(owner),
                str(event),
                str(url),
                float(created),
                _snapshot(snap),
                int(n),
                token,
            )
            for i, job, owner, event, url, created, snap, n in rows
        ]

    def settle(self, leased: Leased, attempt: Attempt | None, state: str, next_due: float = 0.0) -> bool:
        """Record an attempt (None: handed back untried) and the state; False when the lease was lost."""
        record = orjson.dumps(attempt.view()) if attempt else b""
        return bool(self._settle(keys=[DUE], args=[leased.id, leased.token, record, state, repr(next_due)]))


def deliveries_of(client: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    """Return a job's deliveries with their attempts, oldest first, as the deliveries route lists them."""
    ids = cast(list[str], client.lrange(f"job:{job_id}:webhooks", 0, -1))
    pipe = client.pipeline(transaction=False)
    for delivery in ids:
        pipe.hmget(f"webhook:{delivery}", ["event", "url", "state"])
        pipe.lrange(f"webhook:{delivery}:attempts", 0, -1)
        pipe.zscore(DUE, delivery)
    replies = pipe.execute()
    found = []
    for index, delivery in enumerate(ids):
        (event, url, state), attempts, due = replies[3 * index : 3 * index + 3]
        if state is None:  # expired between the two reads
            continue
        found.append(_view(delivery, event, url, state, attempts, due))
    return found


def _view(
    delivery: str, event: str, url: str, state: str, attempts: list[str], due: float | None
) -> dict[str, Any]:
    return {
        "id": delivery,
        "event": event,
        "url": url,
        "state": state,
        "attempts": [orjson.loads(a) for a in attempts],
        "next_attempt_at": rfc3339(due) if state == PENDING and due is not None else None,
    }
