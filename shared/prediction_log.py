"""The prediction log: a sample of served records and every failed job, a capped Redis stream per model.

``predictions:{model}`` is a stream trimmed exactly to the settings' prediction_log_max entries as
each is added. An entry's fields: ``job``, ``version``, ``at`` (seconds since the epoch), ``key``
(the owner id of the job's key, never the key), ``input`` and ``output`` (JSON), ``latency_ms``
(from the job's submission to the entry) and, for a failure, ``error`` (JSON ``{"code",
"message"}``). Workers write entries in the same round trip that records a chunk's outputs
(shared/watch.py) or right after ending a job failed (``PredictionLog.failed``).
"""

from __future__ import annotations

import time
from typing import Any, cast

import orjson
import redis

# Lua that adds one entry for a job (its record gives the version, owner and submission time).
ENTRY_LUA = """
local function log_entry(job, stream, max_length, now, input, output, error)
  local f = redis.call('HMGET', job, 'owner', 'version', 'created_at')
  if not f[1] then return end
  local latency = string.format('%.3f', (tonumber(now) - tonumber(f[3] or now)) * 1000)
  redis.pcall('XADD', stream, 'MAXLEN', max_length, '*', 'job', string.sub(job, 5), 'version', f[2],
    'at', now, 'key', f[1], 'input', input, 'output', output, 'latency_ms', latency, 'error', error)
end
"""

# KEYS: job, log stream; ARGV: now, max length, input JSON, error JSON
_FAILED = (
    "#!lua flags=allow-oom\n"
    + ENTRY_LUA
    + """
log_entry(KEYS[1], KEYS[2], ARGV[2], ARGV[1], ARGV[3], 'null', ARGV[4])
return 1
"""
)


def stream_key(model: str) -> str:
    """Return the key of a model's prediction log."""
    return f"predictions:{model}"


class PredictionLog:
    """Adds failed jobs to their model's prediction log; served records come with their outputs."""

    def __init__(self, client: redis.Redis, max_length: int) -> None:
        self.max_length = max_length
        self._failed = client.register_script(_FAILED)

    def failed(self, job: str, model: str, record: bytes, code: str, message: str) -> None:
        """Add a job that ended failed, with the record (JSON) it failed on and why."""
        error = orjson.dumps({"code": code, "message": message})
        args: list[str | int | bytes] = [repr(time.time()), self.max_length, record, error]
        self._failed(keys=[f"job:{job}", stream_key(model)], args=args)


def _json(raw: str) -> Any:
    return orjson.Fragment(raw) if raw else None


def read_entries(client: redis.Redis, model: str, limit: int, before: str | None) -> list[dict[str, Any]]:
    """Return up to limit of a model's entries, newest first, older than a stream id if given."""
    top = f"({before}" if before else "+"
    found = cast(list[tuple[str, dict[str, str]]], client.xrevrange(stream_key(model), top, "-", count=limit))
    return [
        {
            "id": entry_id,
            "job": fields.get("job"),
            "version": fields.get("version"),
            "at": float(fields.get("at") or 0),
            "key": fields.get("key"),
            "input": _json(fields.get("input", "")),
            "output": _json(fields.get("output", "")),
            "latency_ms": float(fields.get("latency_ms") or 0),
            "error": _json(fields.get("error", "")),
        }
        for entry_id, fields in found
    ]
