-- Adds a plate to an existing merchant.
-- KEYS: [1] merchant, [2] plates zset, [3] plate (one hash tag).
-- ARGV: [1] plate JSON, [2] created_at, [3] plate id.
-- Returns 'ok', 'merchant_missing' or 'plate_exists'.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'merchant_missing'
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 'plate_exists'
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 'ok'
