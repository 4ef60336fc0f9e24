"""Per-version figures kept in Redis by the job store's scripts, read by /metrics at scrape time.

``stats:{model}:{version}`` is a hash of counters: ``jobs:{outcome}`` (jobs that ended so),
``records`` (records predicted), ``le:{bound}`` (succeeded jobs whose time from submission to end
fell in that bucket, the first bound not below it) and ``seconds_sum``; ``stats:index`` is the set
of those keys. Every API process reads the same counters, so the figures hold whatever their number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

INDEX = "stats:index"
# Seconds from submission to the end of a succeeded job: a single record (milliseconds) to a bulk job.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
OUTCOMES = ("succeeded", "failed", "canceled", "expired")
_BOUNDS = ", ".join(f"'{bound:g}'" for bound in BUCKETS)

# Lua the terminal scripts share: count_end when a job ends, count_records as a chunk is predicted.
# A publish job's record has kind 'publish' and is not a model version's traffic.
LUA = (
    """
local STATS_BOUNDS = {"""
    + _BOUNDS
    + """}
local function stats_key(job)
  local f = redis.call('HMGET', job, 'model', 'version', 'kind')
  if not f[1] or not f[2] or (f[3] and f[3] ~= 'predict') then return nil end
  local key = 'stats:' .. f[1] .. ':' .. f[2]
  redis.call('SADD', 'stats:index', key)
  return key
end
local function count_records(job, count)
  local key = stats_key(job)
  if key then redis.call('HINCRBY', key, 'records', count) end
end
local function count_end(job)
  local key = stats_key(job)
  if not key then return end
  local f = redis.call('HMGET', job, 'status', 'created_at', 'completed_at')
  redis.call('HINCRBY', key, 'jobs:' .. f[1], 1)
  if f[1] ~= 'succeeded' or not f[2] or not f[3] then return end
  local seconds = math.max(0, tonumber(f[3]) - tonumber(f[2]))
  local bucket = '+Inf'
  for _, bound in ipairs(STATS_BOUNDS) do
    if seconds <= tonumber(bound) then bucket = bound break end
  end
  redis.call('HINCRBY', key, 'le:' .. bucket, 1)
  redis.call('HINCRBYFLOAT', key, 'seconds_sum', seconds)
end
"""
)


@dataclass(frozen=True)
class VersionStats:
    """One model version's counters as read at one moment."""

    model: str
    version: str
    jobs: dict[str, int] = field(default_factory=dict)
    records: int = 0
    # Cumulative counts of succeeded jobs by upper bound, "+Inf" last, as Prometheus writes them.
    buckets: list[tuple[str, int]] = field(default_factory=list)
    seconds_sum: float = 0.0


def _parse(key: str, raw: dict[str, str]) -> VersionStats:
    _, model, version = key.split(":", 2)
    total = 0
    buckets = []
    for bound in [f"{b:g}" for b in BUCKETS] + ["+Inf"]:
        total += int(raw.get(f"le:{bound}", 0))
        buckets.append((bound, total))
    return VersionStats(
        model=model,
        version=version,
        jobs={outcome: int(raw.get(f"jobs:{outcome}", 0)) for outcome in OUTCOMES},
        records=int(raw.get("records", 0)),
        buckets=buckets,
        seconds_sum=float(raw.get("seconds_sum", 0)),
    )


def read_stats(client: redis.Redis) -> list[VersionStats]:
    """Return every model version's counters, in two round trips."""
    keys = sorted(str(k) for k in client.smembers(INDEX))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return [_parse(key, raw) for key, raw in zip(keys, pipe.execute(), strict=True) if raw]
