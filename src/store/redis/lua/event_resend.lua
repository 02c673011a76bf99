-- Puts an event (delivered, dead, or pending under a lease) back in the outbox, due at
-- ARGV[2]; any live lease dies. The attempt count is kept: it counts every delivery
-- attempt ever made.
-- KEYS: [1] events hash, [2] outbox hash, [3] outbox-due zset, [4] outbox-off
--   (one hash tag).
-- ARGV: [1] event id, [2] now.
-- Returns {'missing'} when the merchant has no such event, else {'ok', relist} where
-- relist is '1' when the merchant must be put back in the global outbox set.
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[1], id) == 0 then
  return {'missing'}
end
local due_type = redis.call('TYPE', KEYS[3]).ok
if due_type ~= 'none' and due_type ~= 'zset' then
  return {'wrong_type'}
end
redis.call('HSET', KEYS[2], id .. ':state', 'pending', id .. ':next', ARGV[2])
redis.call('HDEL', KEYS[2], id .. ':lease', id .. ':lease_until')
redis.call('ZADD', KEYS[3], ARGV[2], id)
return {'ok', tostring(redis.call('DEL', KEYS[4]))}
