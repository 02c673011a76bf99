-- Starts, resumes or replays an idempotent request (see store::IdemBegin).
-- KEYS[1] the record, a hash: fingerprint, state ('pending'|'done'), lease,
--   lease_until, expires_at, status, body.
-- ARGV: [1] fingerprint (hex), [2] now, [3] new lease token, [4] new lease_until,
--   [5] new expires_at, [6] TTL in ms for Redis to drop a new record after retention.
-- Time comes from the caller (tests inject it), so a record with now >= expires_at is
-- absent even if Redis has not dropped it yet.
-- Returns {'started', lease} | {'in_progress'} | {'replay', status, body} | {'reused'}.
local now = tonumber(ARGV[2])
local rec = redis.call('HMGET', KEYS[1], 'fingerprint', 'state', 'lease_until', 'expires_at', 'status', 'body')
local fingerprint, state, lease_until, expires_at = rec[1], rec[2], rec[3], rec[4]
if fingerprint and expires_at and now < tonumber(expires_at) then
  if fingerprint ~= ARGV[1] then
    return {'reused'}
  end
  if state == 'done' then
    return {'replay', rec[5], rec[6]}
  end
  if lease_until and now < tonumber(lease_until) then
    return {'in_progress'}
  end
  -- The holder's lease ran out (its process likely died): take over. Retention still
  -- counts from the first begin, so expires_at and the TTL stay as they are.
  redis.call('HSET', KEYS[1], 'lease', ARGV[3], 'lease_until', ARGV[4])
  return {'started', ARGV[3]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'state', 'pending', 'lease', ARGV[3],
  'lease_until', ARGV[4], 'expires_at', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {'started', ARGV[3]}
