#!lua
-- update_key.lua: change an existing key record; never creates one.
--
-- KEYS[1]: key record   quotad:{qNNN}:key:<key_id>  (HASH)
-- ARGV[1]: new tier, "" to keep
-- ARGV[2]: active "1" or "0", "" to keep
-- ARGV[3]: monthly_limit: "keep", "clear" or "set"
-- ARGV[4]: the new monthly_limit when ARGV[3] = "set"
-- returns: {found (1 or 0), field, value, ...} of the record after the change

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'tier', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'active', ARGV[2]) end
if ARGV[3] == 'clear' then redis.call('HDEL', KEYS[1], 'monthly_limit') end
if ARGV[3] == 'set' then redis.call('HSET', KEYS[1], 'monthly_limit', ARGV[4]) end
local out = {1}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do
  out[#out + 1] = v
end
return out
