-- Deletes a global index entry only while it still names this owner, so a cleanup
-- can never remove an entry another owner has since claimed.
-- KEYS[1] index key; ARGV[1] owner id. Returns 1 when deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
