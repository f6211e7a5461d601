#!lua
-- minimal_consume.lua: the least a consume can do in one call, the reference every
-- bench prints beside its own figures (SPEC §7). Four commands, one per key: store
-- the idempotency key (SET NX), read the key record (GET), charge the counter (INCR),
-- record the audit entry (XADD). No tiers, no periods, no stored decision, no
-- backlog check: whatever quotad spends beyond this is the price of its features.
-- Benches run it with redis-benchmark (EVALSHA, keys drawn with __rand_int__).
--
-- KEYS[1]: idempotency key   (STRING, SET NX PX)
-- KEYS[2]: key record        (STRING: the monthly limit; absent = unlimited)
-- KEYS[3]: usage counter     (STRING, INCR)
-- KEYS[4]: audit stream      (STREAM, XADD)
-- ARGV[1]: idempotency TTL, ms
-- ARGV[2]: endpoint
-- returns: {1, used} admitted, {0, -1} a replay (the idempotency key was stored),
--          {-1, used} over the limit (nothing charged or recorded, the idempotency
--          key released: denials are not stored)

if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return {0, -1}
end
local limit = tonumber(redis.call('GET', KEYS[2]) or '-1')
local used = redis.call('INCR', KEYS[3])
if limit >= 0 and used > limit then
  -- Only a denial pays the undo; the benches' records hold limits never reached.
  redis.call('DECR', KEYS[3])
  redis.call('DEL', KEYS[1])
  return {-1, used - 1}
end
redis.call('XADD', KEYS[4], '*', 'k', KEYS[3], 'u', string.format('%d', used), 'e', ARGV[2])
return {1, used}
