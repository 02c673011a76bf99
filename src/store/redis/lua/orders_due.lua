-- The merchant's open orders due at ARGV[1], earliest first, or the first step of
-- retiring the merchant from the global due-merchants set when it has none at all.
-- KEYS: [1] orders-due zset, [2] orders hash, [3] orders-due-off (one hash tag).
-- ARGV: [1] now, [2] offset, [3] page size (> 0), [4] retire token.
-- Returns {'retire'} after setting the off marker to the token (the caller then
-- removes the merchant from the global set and calls retire_check), or
-- {'due', id1, json1, ...}.
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SET', KEYS[3], ARGV[4])
  return {'retire'}
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', tonumber(ARGV[2]), tonumber(ARGV[3]))
local out = {'due'}
if #ids == 0 then
  return out
end
local records = redis.call('HMGET', KEYS[2], unpack(ids))
for i, id in ipairs(ids) do
  out[2 * i] = id
  out[2 * i + 1] = records[i]
end
return out
