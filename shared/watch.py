"""What a served chunk adds to its version's drift counters and its model's prediction log.

The job store runs WATCH_CHUNK in the pipeline that records the chunk's outputs, just before the
script that records them, so watching costs no round trip of its own. It counts only a chunk whose
job is running and whose outputs are not recorded yet, as the recording script records only those;
two deliveries of one chunk racing each other could both count it, which drift shrugs off. Its
writes are `redis.pcall`s: whatever becomes of them, the outputs are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.drift import BUCKET_TTL_S
from shared.prediction_log import ENTRY_LUA

# KEYS: job, outputs, drift counters, prediction log
# ARGV: chunk index, now, counters' ttl, log's max length, number of counts n, n pairs (field, count),
#       then pairs (input JSON, output JSON) of the sampled records
WATCH_CHUNK = (
    "#!lua flags=allow-oom\n"
    + ENTRY_LUA
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local last = 5 + 2 * tonumber(ARGV[5])
if last > 5 then
  for i = 6, last, 2 do redis.pcall('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1]) end
  redis.pcall('EXPIRE', KEYS[3], ARGV[3])
end
for i = last + 1, #ARGV, 2 do
  log_entry(KEYS[1], KEYS[4], ARGV[4], ARGV[2], ARGV[i], ARGV[i + 1], 'null')
end
return 1
"""
)


@dataclass(frozen=True)
class ChunkWatch:
    """A chunk's counts for its version's drift counters and its sampled records for the log."""

    counters: str
    log: str
    log_max: int
    # Field, count, field, count ...
    counts: list[str | int] = field(default_factory=list)
    # Input JSON, output JSON, input JSON ... of the sampled records.
    entries: list[bytes] = field(default_factory=list)

    def keys(self, job: str) -> list[str]:
        """Return the keys WATCH_CHUNK takes for a chunk of a job."""
        return [f"job:{job}", f"job:{job}:out", self.counters, self.log]

    def args(self, chunk: int, now: str) -> list[str | int | bytes]:
        """Return the arguments WATCH_CHUNK takes for the chunk of that index, recorded at now."""
        return [chunk, now, BUCKET_TTL_S, self.log_max, len(self.counts) // 2, *self.counts, *self.entries]
