-- Leases the merchant's pending events claimable at ARGV[1] (due, and any lease
-- expired), or starts retiring the merchant from the global outbox-merchants set when
-- it has no pending event at all. Atomic, so two claimers never lease one event.
-- KEYS: [1] outbox-due zset, [2] outbox hash, [3] events hash, [4] outbox-off
--   (one hash tag).
-- ARGV: [1] now, [2] lease_until, [3] page size (> 0), [4] lease token prefix,
--   [5] retire token.
-- Returns {'retire'} after setting the off marker (see orders_due.lua), or
-- {'claimed', id1, json1, attempt1, lease1, since1, ...} where since is when the
-- event's retry window started ('' = when the event was created).
for i, want in ipairs({'zset', 'hash', 'hash', 'string'}) do
  local found = redis.call('TYPE', KEYS[i]).ok
  if found ~= 'none' and found ~= want then
    return {'wrong_type'}
  end
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SET', KEYS[4], ARGV[5])
  return {'retire'}
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {'claimed'}
for n, id in ipairs(ids) do
  local json = redis.call('HGET', KEYS[3], id)
  -- Only pending events are in the due set; anything else is skipped, not leased.
  if json and redis.call('HGET', KEYS[2], id .. ':state') == 'pending' then
    local lease = ARGV[4] .. '.' .. n
    local attempt = redis.call('HINCRBY', KEYS[2], id .. ':attempts', 1)
    redis.call('HSET', KEYS[2], id .. ':lease', lease, id .. ':lease_until', ARGV[2])
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    out[#out + 1] = id
    out[#out + 1] = json
    out[#out + 1] = tostring(attempt)
    out[#out + 1] = lease
    out[#out + 1] = redis.call('HGET', KEYS[2], id .. ':since') or ''
  end
end
return out
