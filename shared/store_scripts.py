"""The Lua scripts that make each change of a job's state one atomic step in Redis."""

from shared import stats

# A finished one-chunk job's outputs travel with its end's announcement up to this size.
ANNOUNCED_OUTPUT_BYTES = 16_384

# An unfinished job's keys live up to the longest a job may wait (its lifetime); once it ends, its
# record, outputs and idempotency key live for the retention (the terminal scripts set that).
#
# Creating a job is refused whole when Redis is out of memory (`#!lua`: nothing half-written); the
# scripts that carry an accepted job to its end may run at the limit (`allow-oom`), since the API
# stops accepting below it and an accepted job must always end.
#
# Besides its record, an unfinished job is a member of `open:{owner}` (the owner's unfinished jobs,
# score 0 so ids sort by age) and `pending:{queue}` (score: when its messages were last published,
# read by the reaper). `claimed:{queue}` holds the latest publish time of any job a worker claimed:
# the queue is first in, first out, so a message published before it and held by no worker is gone.
# `bytes:{owner}:{bucket}` counts the bytes of inputs and outputs the owner stored in a time bucket.

# KEYS: job, owner index, idempotency key or '', model's queued set, owner's rate counter, inputs,
#       owner's open set, queue's pending set
# ARGV: lifetime, oldest id kept, body hash, job id, now, max queued, rate limit, inputs or '',
#       max open per key, max stored bytes, bytes of this job's inputs, bucket width, buckets counted,
#       bucket ttl, owner, then the record's fields
CREATE = """#!lua
local job, index, idem, queued, rate, inputs, open, pending =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local now = tonumber(ARGV[5])
if idem ~= '' then
  local seen = redis.call('GET', idem)
  if seen then
    local sep = string.find(seen, ' ', 1, true)
    local body, id = string.sub(seen, 1, sep - 1), string.sub(seen, sep + 1)
    if body ~= ARGV[3] then return {'conflict', id} end
    if redis.call('EXISTS', 'job:' .. id) == 1 then return {'existing', id} end
  end
end
if tonumber(ARGV[7]) > 0 then
  local used = redis.call('INCR', rate)
  if used == 1 then redis.call('EXPIRE', rate, 2) end
  if used > tonumber(ARGV[7]) then return {'rate_limited', ''} end
end
redis.call('ZREMRANGEBYSCORE', queued, '-inf', now - tonumber(ARGV[1]))
if redis.call('ZCARD', queued) >= tonumber(ARGV[6]) then return {'queue_full', ''} end
redis.call('ZREMRANGEBYLEX', open, '-', '(' .. ARGV[2])
if redis.call('ZCARD', open) >= tonumber(ARGV[9]) then return {'key_full', ''} end
local width, cur = tonumber(ARGV[12]), math.floor(now / tonumber(ARGV[12]))
local buckets = {}
for i = 0, tonumber(ARGV[13]) - 1 do buckets[#buckets + 1] = 'bytes:' .. ARGV[15] .. ':' .. (cur - i) end
local stored = 0
for _, value in ipairs(redis.call('MGET', unpack(buckets))) do
  if value then stored = stored + tonumber(value) end
end
if stored + tonumber(ARGV[11]) > tonumber(ARGV[10]) then return {'storage_full', tostring(stored)} end
redis.call('INCRBY', buckets[1], ARGV[11])
redis.call('EXPIRE', buckets[1], ARGV[14])
redis.call('HSET', job, unpack(ARGV, 16))
if idem ~= '' then
  redis.call('SET', idem, ARGV[3] .. ' ' .. ARGV[4], 'EX', ARGV[1])
  redis.call('HSET', job, 'idem', idem)
end
redis.call('EXPIRE', job, ARGV[1])
if ARGV[8] ~= '' then redis.call('HSET', inputs, 0, ARGV[8]) end
redis.call('EXPIRE', inputs, ARGV[1])
redis.call('ZADD', queued, now, ARGV[4])
redis.call('ZADD', open, 0, ARGV[4])
redis.call('EXPIRE', open, ARGV[1])
redis.call('ZADD', pending, now, ARGV[4])
redis.call('ZADD', index, 0, ARGV[4])
redis.call('ZREMRANGEBYLEX', index, '-', '(' .. ARGV[2])
redis.call('EXPIRE', index, ARGV[1])
return {'created', ARGV[4]}
"""

# The steps every terminal script takes: the job's keys get the retention, it leaves the unfinished
# sets (the queue's pending set, given, and its owner's open set), its version's figures count its
# end (shared/stats.py) and its end is announced: "{id} [record's fields, outputs]" (JSON), the
# outputs (a one-chunk job's NDJSON) only when short, so a long-poll answers without reading again.
_CLOSE = (
    stats.LUA
    + f"local ANNOUNCED_OUTPUT_BYTES = {ANNOUNCED_OUTPUT_BYTES}\n"
    + """
local function close(job, pending, retention)
  local id = string.sub(job, 5)
  redis.call('EXPIRE', job, retention)
  local idem = redis.call('HGET', job, 'idem')
  if idem then redis.call('EXPIRE', idem, retention) end
  redis.call('ZREM', pending, id)
  redis.call('ZREM', 'open:' .. redis.call('HGET', job, 'owner'), id)
  count_end(job)
  local ending = {redis.call('HGETALL', job)}
  local out = redis.call('HGET', job .. ':out', '0')
  if out and string.len(out) <= ANNOUNCED_OUTPUT_BYTES then ending[2] = out end
  redis.call('PUBLISH', 'jobs:done', id .. ' ' .. cjson.encode(ending))
end
"""
)

# A change short of the end (started, a chunk done) is announced only for a job an events stream
# follows (`followed:{id}` exists), so an unwatched job costs one EXISTS, not a message to every API.
_ANNOUNCE = """
local function announce(job)
  local id = string.sub(job, 5)
  if redis.call('EXISTS', 'followed:' .. id) == 1 then redis.call('PUBLISH', 'jobs:changed', id) end
end
"""

# A job submitted with a webhook (its `webhook` field: {"url", "events"}) gets a delivery for each
# event it asked for, enqueued in the same step as the change (shared/webhook_store.py reads them):
# `webhook:{delivery}` (with the record as the event found it), in the job's `job:{id}:webhooks`
# and due now in `webhooks:due`. Deliveries live as long as their job: the retention, once given.
_WEBHOOK = """
local function webhook(job, event, now, retention, seq)
  local hook = redis.call('HGET', job, 'webhook')
  if not hook then return end
  local parsed, config = pcall(cjson.decode, hook)
  if not parsed or type(config) ~= 'table' or type(config.events) ~= 'table' then return end
  local id, index = string.sub(job, 5), job .. ':webhooks'
  local ttl = math.max(1, tonumber(retention or redis.call('TTL', job)))
  for _, wanted in ipairs(config.events) do
    if wanted == event then
      local delivery = id .. '-' .. event .. (seq and ('-' .. seq) or '')
      local key = 'webhook:' .. delivery
      redis.call('HSET', key, 'job', id, 'owner', redis.call('HGET', job, 'owner'), 'event', event,
        'url', config.url, 'state', 'pending', 'created_at', now,
        'snapshot', cjson.encode(redis.call('HGETALL', job)))
      redis.call('EXPIRE', key, ttl)
      redis.call('RPUSH', index, delivery)
      redis.call('ZADD', 'webhooks:due', now, delivery)
    end
  end
  if retention then
    for _, delivery in ipairs(redis.call('LRANGE', index, 0, -1)) do
      redis.call('EXPIRE', 'webhook:' .. delivery, ttl)
      redis.call('EXPIRE', 'webhook:' .. delivery .. ':attempts', ttl)
    end
  end
  redis.call('EXPIRE', index, ttl)
end
"""

# KEYS: job, model's queued set, inputs, queue's pending set, queue's claimed mark; ARGV: now, retention
CLAIM = (
    "#!lua flags=allow-oom\n"
    + _CLOSE
    + _WEBHOOK
    + _ANNOUNCE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'queued' and status ~= 'running' then return status end
local id = string.sub(KEYS[1], 5)
redis.call('ZREM', KEYS[2], id)
local sent = tonumber(redis.call('ZSCORE', KEYS[4], id) or '')
if sent and sent > tonumber(redis.call('GET', KEYS[5]) or '0') then
  redis.call('SET', KEYS[5], tostring(sent))
end
local deadline = tonumber(redis.call('HGET', KEYS[1], 'deadline_at') or '')
if status == 'queued' and deadline and tonumber(ARGV[1]) > deadline then
  redis.call('HSET', KEYS[1], 'status', 'expired', 'completed_at', ARGV[1], 'error',
    '{"code":"expired","message":"The job was not started before its deadline."}')
  redis.call('DEL', KEYS[3])
  close(KEYS[1], KEYS[4], ARGV[2])
  webhook(KEYS[1], 'completed', ARGV[1], ARGV[2])
  return 'expired'
end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
  announce(KEYS[1])
  webhook(KEYS[1], 'started', ARGV[1])
end
return 'running'
"""
)

# KEYS: job, outputs, inputs, queue's pending set
# ARGV: chunk index, outputs ndjson, record count, predict ms, now, retention, bucket width, bucket ttl
FINISH_CHUNK = (
    "#!lua flags=allow-oom\n"
    + _CLOSE
    + _WEBHOOK
    + _ANNOUNCE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[6])
local bucket = 'bytes:' .. redis.call('HGET', KEYS[1], 'owner') .. ':'
  .. math.floor(tonumber(ARGV[5]) / tonumber(ARGV[7]))
redis.call('INCRBY', bucket, string.len(ARGV[2]))
redis.call('EXPIRE', bucket, ARGV[8])
redis.call('HINCRBY', KEYS[1], 'done', ARGV[3])
count_records(KEYS[1], ARGV[3])
redis.call('HINCRBYFLOAT', KEYS[1], 'predict_ms', ARGV[4])
local finished = redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
if finished >= tonumber(redis.call('HGET', KEYS[1], 'chunks')) then
  redis.call('HSET', KEYS[1], 'status', 'succeeded', 'completed_at', ARGV[5])
  close(KEYS[1], KEYS[4], ARGV[6])
  webhook(KEYS[1], 'completed', ARGV[5], ARGV[6])
else
  announce(KEYS[1])
  webhook(KEYS[1], 'progress', ARGV[5], nil, finished)
end
return 1
"""
)

# KEYS: job, outputs, model's queued set, inputs, queue's pending set
# ARGV: status, error json, now, retention
END = (
    "#!lua flags=allow-oom\n"
    + _CLOSE
    + _WEBHOOK
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'queued' and status ~= 'running' then return status end
redis.call('ZREM', KEYS[3], string.sub(KEYS[1], 5))
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'error', ARGV[2], 'completed_at', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
close(KEYS[1], KEYS[5], ARGV[4])
webhook(KEYS[1], 'completed', ARGV[3], ARGV[4])
return 'ended'
"""
)
