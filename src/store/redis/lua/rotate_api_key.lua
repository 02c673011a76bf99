-- Replaces the merchant's current API key. Returns {'ok', old hash or ''} so the
-- caller can drop the old global index entry afterwards, or {'merchant_missing'}.
-- KEYS: [1] merchant, [2] apikey hash (one hash tag).
-- ARGV: [1] new key hash (hex), [2] new key record JSON.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'merchant_missing'}
end
local old = redis.call('HGET', KEYS[2], 'hash') or ''
redis.call('HSET', KEYS[2], 'hash', ARGV[1], 'record', ARGV[2])
return {'ok', old}
