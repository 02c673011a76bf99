-- Claims a global index entry for an owner (write-ahead, before the merchant's own
-- script). Returns 1 when the entry now names this owner (newly set, or already
-- ours from an earlier attempt of the same operation), 0 when another owner holds it.
-- KEYS[1] index key; ARGV[1] owner id.
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
if current == ARGV[1] then
  return 1
end
return 0
