-- Onboards a merchant: record, first plate, plate index, API key, all or nothing.
-- KEYS: [1] merchant, [2] plates zset, [3] plate, [4] apikey hash (all one hash tag).
-- ARGV: [1] merchant JSON, [2] plate JSON, [3] plate created_at, [4] plate id,
--       [5] API key hash (hex), [6] API key record JSON.
-- Returns 'ok', or the conflict marker 'merchant_exists' / 'plate_exists'.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'merchant_exists'
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 'plate_exists'
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[4], 'hash', ARGV[5], 'record', ARGV[6])
return 'ok'
