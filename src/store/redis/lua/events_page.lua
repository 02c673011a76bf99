-- Up to ARGV[2] of the merchant's events after the cursor event ARGV[1] ('' = from
-- the first), in creation order. An unknown cursor yields an empty page.
-- KEYS: [1] events-by-seq zset, [2] events hash (one hash tag).
-- Returns {id1, json1, id2, json2, ...}.
local ids
if ARGV[1] ~= '' then
  local seq = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not seq then
    return {}
  end
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. seq, '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
else
  ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
end
if #ids == 0 then
  return {}
end
local records = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {}
for i, id in ipairs(ids) do
  out[2 * i - 1] = id
  out[2 * i] = records[i]
end
return out
