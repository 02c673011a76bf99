-- Stores the response of a pending request while ARGV[1] still holds its lease.
-- KEYS[1] the record; ARGV: [1] lease, [2] status, [3] body bytes.
-- Returns 1 when stored, 0 (changing nothing) when the lease no longer owns it.
local rec = redis.call('HMGET', KEYS[1], 'state', 'lease')
if rec[1] ~= 'pending' or rec[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3])
redis.call('HDEL', KEYS[1], 'lease', 'lease_until')
return 1
