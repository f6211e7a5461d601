#!lua
-- create_key.lua: get-or-create a key record. An existing record is returned unchanged.
--
-- KEYS[1]: key record   quotad:{qNNN}:key:<key_id>  (HASH)
-- ARGV[1]: tier         ARGV[2]: created_at, RFC 3339
-- ARGV[3]: name, "" for none
-- ARGV[4]: monthly_limit override, "" for none
-- returns: {created (1 or 0), field, value, field, value, ...} of the stored record

local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'tier', ARGV[1], 'active', '1', 'created_at', ARGV[2])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'name', ARGV[3]) end
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'monthly_limit', ARGV[4]) end
  created = 1
end
local out = {created}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do
  out[#out + 1] = v
end
return out
