-- Returns the merchant record when ARGV[1] is its CURRENT key hash, else nil: the
-- global index may still name a merchant whose key was rotated or never committed.
-- KEYS: [1] apikey hash, [2] merchant (one hash tag).
if redis.call('HGET', KEYS[1], 'hash') == ARGV[1] then
  return redis.call('GET', KEYS[2])
end
return false
