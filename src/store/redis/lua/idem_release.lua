-- Forgets a pending request while ARGV[1] still holds its lease, freeing the key.
-- KEYS[1] the record. Returns 1 when released, 0 when the lease no longer owns it.
local rec = redis.call('HMGET', KEYS[1], 'state', 'lease')
if rec[1] ~= 'pending' or rec[2] ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
