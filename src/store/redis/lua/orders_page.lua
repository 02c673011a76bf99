-- One page of a merchant's orders, newest first (created_at desc, then id desc),
-- after the cursor order and within [created_from, created_to). The status filter is
-- applied by the caller, which pages on with the last id returned.
-- KEYS: [1] orders-by-created zset, [2] orders hash (one hash tag).
-- ARGV: [1] cursor order id or '', [2] created_from or '', [3] created_to or '',
--   [4] page size (> 0).
-- Returns {id1, json1, id2, json2, ...}; an unknown cursor yields an empty page.
local start = 0
if ARGV[1] ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
  if not rank then
    return {}
  end
  start = rank + 1
end
if ARGV[3] ~= '' then
  -- Orders created at or after created_to come first in reverse order: skip them.
  local newer = redis.call('ZCOUNT', KEYS[1], ARGV[3], '+inf')
  if newer > start then
    start = newer
  end
end
local stop = start + tonumber(ARGV[4]) - 1
if ARGV[2] ~= '' then
  local last = redis.call('ZCOUNT', KEYS[1], ARGV[2], '+inf') - 1
  if last < stop then
    stop = last
  end
end
if stop < start then
  return {}
end
local ids = redis.call('ZREVRANGE', KEYS[1], start, stop)
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
