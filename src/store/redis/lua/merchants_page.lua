-- Up to ARGV[2] merchant ids after the cursor id ARGV[1] ('' = from the start), in
-- (created_at, id) order. An unknown cursor yields an empty page.
-- KEYS: [1] the global merchants zset.
local count = tonumber(ARGV[2])
local start = 0
if ARGV[1] ~= '' then
  local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
  if not rank then
    return {}
  end
  start = rank + 1
end
return redis.call('ZRANGE', KEYS[1], start, start + count - 1)
