-- The records a list of ids names, in list order: positions ARGV[1]..ARGV[2] of the
-- list KEYS[1], each looked up in the hash KEYS[2] (one hash tag).
-- Returns {id1, record1, id2, record2, ...}; a missing record is nil.
local ids = redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])
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
