-- The payments commit (store::OrderChange): dedupe, compare-and-set the order, record
-- a refund, post a ledger entry, enqueue an event. All checks run before the first
-- write and nothing after the first write can fail, so a change is all or nothing.
-- KEYS (one hash tag): [1] orders hash, [2] order-versions hash, [3] orders-by-created
--   zset, [4] orders-due zset, [5] orders-due-off, [6] dedupe set, [7] refunds hash,
--   [8] order-refunds list, [9] entries hash, [10] ledger list, [11] order-entries
--   list, [12] balances hash, [13] events hash, [14] event-seq, [15] events-by-seq
--   zset, [16] outbox hash, [17] outbox-due zset, [18] outbox-off.
-- ARGV: [1] order id, [2] expected version, [3] new version, [4] '1' when the new
--   version follows the expected one, [5] order JSON, [6] created_at, [7] next_check_at
--   or '' (not due: terminal or no check), [8] '1' + [9] dedupe key, [10] '1' +
--   [11] refund id + [12] refund JSON, [13] '1' + [14] entry id + [15] entry JSON,
--   [16] '1' + [17] event id + [18] event JSON, [19] now (the event's due time),
--   [20] number of balance deltas, then pairs (balance field, delta).
-- Returns {'applied', relist_due, relist_outbox} ('1' when this merchant must be put
-- back in the global set), or {'duplicate'} | {'conflict'} | {'invalid_version'} |
-- {'event_exists'} | {'refund_of_another_order'} | {'overflow'} | {'wrong_type'}.
local expected_types = {'hash', 'hash', 'zset', 'zset', 'string', 'set', 'hash', 'list',
  'hash', 'list', 'list', 'hash', 'hash', 'string', 'zset', 'hash', 'zset', 'string'}
for i, want in ipairs(expected_types) do
  local found = redis.call('TYPE', KEYS[i]).ok
  if found ~= 'none' and found ~= want then
    return {'wrong_type'}
  end
end

local order_id = ARGV[1]
local has_dedupe = ARGV[8] == '1'
local has_refund = ARGV[10] == '1'
local has_entry = ARGV[13] == '1'
local has_event = ARGV[16] == '1'

if has_dedupe and redis.call('SISMEMBER', KEYS[6], ARGV[9]) == 1 then
  return {'duplicate'}
end
if has_entry and redis.call('HEXISTS', KEYS[9], ARGV[14]) == 1 then
  return {'duplicate'}
end
local stored = redis.call('HGET', KEYS[2], order_id)
if ARGV[2] == '0' then
  if stored then
    return {'conflict'}
  end
elseif stored ~= ARGV[2] then
  return {'conflict'}
end
if ARGV[4] ~= '1' then
  return {'invalid_version'}
end
if has_event and redis.call('HEXISTS', KEYS[13], ARGV[17]) == 1 then
  return {'event_exists'}
end
-- A refund id is replaced only by a record of the same order (as embedded refuses it).
if has_refund then
  local existing = redis.call('HGET', KEYS[7], ARGV[11])
  if existing then
    local ok, record = pcall(cjson.decode, existing)
    if not ok or type(record) ~= 'table' then
      return {'wrong_type'}
    end
    if record.order_id ~= order_id then
      return {'refund_of_another_order'}
    end
  end
end
-- HINCRBY fails on overflow, which would leave the change half written: refuse first.
-- Lua numbers are doubles, so the bound keeps a wide margin below 2^63.
local deltas = tonumber(ARGV[20])
for i = 0, deltas - 1 do
  local current = redis.call('HGET', KEYS[12], ARGV[21 + 2 * i]) or '0'
  if not string.match(current, '^%-?%d+$') then
    return {'wrong_type'}
  end
  if math.abs(tonumber(current) + tonumber(ARGV[22 + 2 * i])) > 9.2e18 then
    return {'overflow'}
  end
end
-- INCR fails on a non-integer counter: check it before the first write too.
if has_event then
  local seq = redis.call('GET', KEYS[14])
  if seq and not string.match(seq, '^%d+$') then
    return {'wrong_type'}
  end
end

redis.call('HSET', KEYS[1], order_id, ARGV[5])
redis.call('HSET', KEYS[2], order_id, ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[6], order_id)
local relist_due = 0
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[7], order_id)
  relist_due = redis.call('DEL', KEYS[5])
else
  redis.call('ZREM', KEYS[4], order_id)
end
if has_dedupe then
  redis.call('SADD', KEYS[6], ARGV[9])
end
if has_refund then
  if redis.call('HSET', KEYS[7], ARGV[11], ARGV[12]) == 1 then
    redis.call('RPUSH', KEYS[8], ARGV[11])
  end
end
if has_entry then
  redis.call('HSET', KEYS[9], ARGV[14], ARGV[15])
  redis.call('RPUSH', KEYS[10], ARGV[14])
  redis.call('RPUSH', KEYS[11], ARGV[14])
  for i = 0, deltas - 1 do
    redis.call('HINCRBY', KEYS[12], ARGV[21 + 2 * i], ARGV[22 + 2 * i])
  end
end
local relist_outbox = 0
if has_event then
  local event_id = ARGV[17]
  local seq = redis.call('INCR', KEYS[14])
  redis.call('HSET', KEYS[13], event_id, ARGV[18])
  redis.call('ZADD', KEYS[15], seq, event_id)
  redis.call('HSET', KEYS[16], event_id .. ':state', 'pending', event_id .. ':attempts', 0,
    event_id .. ':next', ARGV[19])
  redis.call('ZADD', KEYS[17], ARGV[19], event_id)
  relist_outbox = redis.call('DEL', KEYS[18])
end
return {'applied', tostring(relist_due), tostring(relist_outbox)}
