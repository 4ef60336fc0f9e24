"""The Lua scripts that make each change of a job's state one atomic step in Redis."""

# An unfinished job's keys live up to the longest a job may wait (its lifetime); once it ends, its
# record, outputs and idempotency key live for the retention (the terminal scripts set that).

# KEYS: job, owner index, idempotency key or '', model's queued set, owner's rate counter, inputs
# ARGV: lifetime, oldest id kept, body hash, job id, now, max queued, rate limit, inputs or '', fields
CREATE = """
local job, index, idem, queued, rate = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
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
redis.call('ZREMRANGEBYSCORE', queued, '-inf', tonumber(ARGV[5]) - tonumber(ARGV[1]))
if redis.call('ZCARD', queued) >= tonumber(ARGV[6]) then return {'queue_full', ''} end
redis.call('HSET', job, unpack(ARGV, 9))
if idem ~= '' then
  redis.call('SET', idem, ARGV[3] .. ' ' .. ARGV[4], 'EX', ARGV[1])
  redis.call('HSET', job, 'idem', idem)
end
redis.call('EXPIRE', job, ARGV[1])
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[6], 0, ARGV[8])
  redis.call('EXPIRE', KEYS[6], ARGV[1])
end
redis.call('ZADD', queued, ARGV[5], ARGV[4])
redis.call('ZADD', index, 0, ARGV[4])
redis.call('ZREMRANGEBYLEX', index, '-', '(' .. ARGV[2])
redis.call('EXPIRE', index, ARGV[1])
return {'created', ARGV[4]}
"""

# KEYS: job, model's queued set, inputs; ARGV: now, retention
CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'queued' and status ~= 'running' then return status end
redis.call('ZREM', KEYS[2], string.sub(KEYS[1], 5))
local deadline = tonumber(redis.call('HGET', KEYS[1], 'deadline_at') or '')
if status == 'queued' and deadline and tonumber(ARGV[1]) > deadline then
  redis.call('HSET', KEYS[1], 'status', 'expired', 'completed_at', ARGV[1], 'error',
    '{"code":"expired","message":"The job was not started before its deadline."}')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[3])
  local idem = redis.call('HGET', KEYS[1], 'idem')
  if idem then redis.call('EXPIRE', idem, ARGV[2]) end
  redis.call('PUBLISH', 'jobs:done', string.sub(KEYS[1], 5))
  return 'expired'
end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
end
return 'running'
"""

# KEYS: job, outputs, inputs; ARGV: chunk index, outputs ndjson, record count, predict ms, now, retention
FINISH_CHUNK = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('HINCRBY', KEYS[1], 'done', ARGV[3])
redis.call('HINCRBYFLOAT', KEYS[1], 'predict_ms', ARGV[4])
local finished = redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
if finished >= tonumber(redis.call('HGET', KEYS[1], 'chunks')) then
  redis.call('HSET', KEYS[1], 'status', 'succeeded', 'completed_at', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  local idem = redis.call('HGET', KEYS[1], 'idem')
  if idem then redis.call('EXPIRE', idem, ARGV[6]) end
  redis.call('PUBLISH', 'jobs:done', string.sub(KEYS[1], 5))
end
return 1
"""

# KEYS: job, outputs, model's queued set, inputs; ARGV: status, error json, now, retention
END = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'queued' and status ~= 'running' then return status end
redis.call('ZREM', KEYS[3], string.sub(KEYS[1], 5))
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'error', ARGV[2], 'completed_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local idem = redis.call('HGET', KEYS[1], 'idem')
if idem then redis.call('EXPIRE', idem, ARGV[4]) end
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', 'jobs:done', string.sub(KEYS[1], 5))
return 'ended'
"""
