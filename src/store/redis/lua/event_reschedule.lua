-- Releases a claim and makes the event claimable again at ARGV[3], only while ARGV[2]
-- is the live lease of the pending event.
-- KEYS: [1] outbox hash, [2] outbox-due zset (one hash tag).
-- ARGV: [1] event id, [2] lease, [3] next attempt at, [4] error to record.
-- Returns 1 when done, 0 (changing nothing) when the lease is not the live one,
-- -1 when a key holds the wrong kind of value.
for i, want in ipairs({'hash', 'zset'}) do
  local found = redis.call('TYPE', KEYS[i]).ok
  if found ~= 'none' and found ~= want then
    return -1
  end
end
local id = ARGV[1]
local held = redis.call('HMGET', KEYS[1], id .. ':state', id .. ':lease')
if held[1] ~= 'pending' or held[2] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], id .. ':next', ARGV[3], id .. ':error', ARGV[4])
redis.call('HDEL', KEYS[1], id .. ':lease', id .. ':lease_until')
redis.call('ZADD', KEYS[2], ARGV[3], id)
return 1
