-- Last step of retiring a merchant from a global set (due-merchants or
-- outbox-merchants), run after the caller removed it there. Returns 1 when the
-- merchant must be put back: its set is not empty any more, or a writer touched the
-- off marker since this retire set it (that writer may have relied on the entry the
-- retire just removed). Returns 0 when the retire stands; the marker stays, so the
-- next writer knows to put the merchant back.
-- KEYS: [1] the merchant's due zset, [2] its off marker; ARGV[1] the retire token.
if redis.call('ZCARD', KEYS[1]) > 0 then
  return 1
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 1
end
return 0
