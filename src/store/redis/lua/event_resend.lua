-- Puts an event back in the outbox, due at ARGV[2], and starts a new retry window at
-- ARGV[2]. A delivered or dead event becomes pending with no lease. An event still
-- pending keeps its lease, so a dispatcher working on it is never joined by a second
-- one: it only becomes due no later than now, and its score (when it may next be
-- claimed) stays at the live lease's expiry. The attempt count is kept: it counts
-- every delivery attempt ever made.
-- KEYS: [1] events hash, [2] outbox hash, [3] outbox-due zset, [4] outbox-off
--   (one hash tag).
-- ARGV: [1] event id, [2] now.
-- Returns {'missing'} when the merchant has no such event, else {'ok', relist} where
-- relist is '1' when the merchant must be put back in the global outbox set.
local id = ARGV[1]
local now = ARGV[2]
if redis.call('HEXISTS', KEYS[1], id) == 0 then
  return {'missing'}
end
for i, want in ipairs({'hash', 'hash', 'zset', 'string'}) do
  local found = redis.call('TYPE', KEYS[i]).ok
  if found ~= 'none' and found ~= want then
    return {'wrong_type'}
  end
end
local fields = redis.call('HMGET', KEYS[2], id .. ':state', id .. ':next', id .. ':lease',
  id .. ':lease_until')
local state, next_at, lease, lease_until = fields[1], fields[2], fields[3], fields[4]
if state == 'pending' then
  -- Due no later than now; times are kept as the strings the caller gave.
  local due = now
  if next_at and tonumber(next_at) and tonumber(next_at) < tonumber(now) then
    due = next_at
  end
  local score = due
  if lease and lease_until and tonumber(lease_until) and tonumber(lease_until) > tonumber(due) then
    score = lease_until
  end
  redis.call('HSET', KEYS[2], id .. ':next', due, id .. ':since', now)
  redis.call('ZADD', KEYS[3], score, id)
else
  redis.call('HSET', KEYS[2], id .. ':state', 'pending', id .. ':next', now, id .. ':since', now)
  redis.call('HDEL', KEYS[2], id .. ':lease', id .. ':lease_until')
  redis.call('ZADD', KEYS[3], now, id)
end
return {'ok', tostring(redis.call('DEL', KEYS[4]))}
