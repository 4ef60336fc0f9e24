"""What a served chunk adds to its version's drift counters and its model's prediction log.

The job store runs WATCH_CHUNKS in the pipeline that records the chunks' outputs, just before the
scripts that record them, so watching costs no round trip of its own. It counts only a chunk whose
job is running and whose outputs are not recorded yet, as the recording script records only those;
two deliveries of one chunk racing each other could both count it, which drift shrugs off. Its
writes are `redis.pcall`s: whatever becomes of them, the outputs are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.drift import BUCKET_TTL_S
from shared.prediction_log import ENTRY_LUA

# KEYS: per chunk: job, outputs, drift counters, prediction log
# ARGV: now, counters' ttl, then per chunk: its index, the log's max length, the number of counts n,
#       the number of sampled records m, n pairs (field, count), m pairs (input JSON, output JSON)
# The counts of every counted chunk are summed first, so a batch of one-record jobs adds to each
# counter once, not once a job; a chunk listed twice (a redelivery in the same batch) counts once.
WATCH_CHUNKS = (
    "#!lua flags=allow-oom\n"
    + ENTRY_LUA
    + """
local totals, order, seen = {}, {}, {}
local a = 3
for k = 1, #KEYS, 4 do
  local job, out, counters, log = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local chunk, log_max = ARGV[a], ARGV[a + 1]
  local counts, entries = a + 4, a + 4 + 2 * tonumber(ARGV[a + 2])
  a = entries + 2 * tonumber(ARGV[a + 3])
  local mark = out .. ' ' .. chunk
  if not seen[mark] and redis.call('HGET', job, 'status') == 'running'
      and redis.call('HEXISTS', out, chunk) == 0 then
    local sums = totals[counters]
    if not sums then
      sums = {}
      totals[counters] = sums
      order[#order + 1] = counters
    end
    for i = counts, entries - 1, 2 do sums[ARGV[i]] = (sums[ARGV[i]] or 0) + tonumber(ARGV[i + 1]) end
    for i = entries, a - 1, 2 do log_entry(job, log, log_max, ARGV[1], ARGV[i], ARGV[i + 1], 'null') end
  end
  seen[mark] = true
end
for _, counters in ipairs(order) do
  local any = false
  for name, count in pairs(totals[counters]) do
    redis.pcall('HINCRBY', counters, name, count)
    any = true
  end
  if any then redis.pcall('EXPIRE', counters, ARGV[2]) end
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

    def args(self, chunk: int) -> list[str | int | bytes]:
        """Return WATCH_CHUNKS's arguments for the chunk of that index."""
        counts, entries = len(self.counts) // 2, len(self.entries) // 2
        return [chunk, self.log_max, counts, entries, *self.counts, *self.entries]


def watch_call(
    chunks: list[tuple[str, int, ChunkWatch]], now: str
) -> tuple[list[str], list[str | int | bytes]]:
    """Return WATCH_CHUNKS's keys and arguments for (job, chunk index, watch) triples recorded at now."""
    keys: list[str] = []
    args: list[str | int | bytes] = [now, BUCKET_TTL_S]
    for job, chunk, watch in chunks:
        keys += [f"job:{job}", f"job:{job}:out", watch.counters, watch.log]
        args += watch.args(chunk)
    return keys, args
