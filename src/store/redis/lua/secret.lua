-- Stores the candidate only if no secret exists, then returns the stored one, so
-- concurrent first callers all agree. KEYS[1] secret; ARGV[1] candidate bytes.
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
