#!lua
-- consume.lua: decide one request atomically and, if allowed, record and count it.
-- Every check comes before the first write, and XADD comes before INCRBY: Lua does
-- not roll back, so a failed write must never charge a key without its audit record.
--
-- KEYS[1]: key record            quotad:{qNNN}:key:<key_id>          (HASH)
-- KEYS[2]: usage counter         quotad:{qNNN}:use:<key_id>:<YYYY-MM> (STRING)
-- KEYS[3]: idempotency entry     quotad:{qNNN}:idem:<key_id>:<hash>   (STRING; untouched when ARGV[6] = "")
-- KEYS[4]: audit stream          quotad:{qNNN}:audit                  (STREAM)
-- ARGV[1]: key_id                  ARGV[2]: cost (integer >= 1)
-- ARGV[3]: now, unix ms            ARGV[4]: counter TTL ms (to period end + 35 days)
-- ARGV[5]: reset_at, unix ms       ARGV[6]: idempotency key, "" for none
-- ARGV[7]: request fingerprint     ARGV[8]: idempotency TTL ms
-- ARGV[9]: max audit backlog       ARGV[10]: "reject" | "trim"
-- ARGV[11]: "1" to record denials  ARGV[12]: timestamp, RFC 3339
-- ARGV[13]: endpoint               ARGV[14]: audit extras, JSON object
-- ARGV[15..]: tier catalogue as name, limit pairs (limit -1 = unlimited)
-- returns: {status, tier, limit, used, stream_entry_id, reset_ms, trimmed}, integers as strings
--   status: allowed | denied | replayed | invalid_key | key_reused | unknown_tier | backlog_full
--   limit: -1 = unlimited; stream_entry_id: "" when nothing was recorded

-- Integers leave the script as '%d' strings: cjson.encode and tostring keep only 14
-- significant digits, and every stored integer is at most 2^53 - 1 (exact in a double).
local function int(n)
  return string.format('%d', n)
end

local function reply(status, tier, limit, used, entry_id, reset_ms, trimmed)
  return {status, tier, int(limit), int(used), entry_id, reset_ms, int(trimmed)}
end

local function record(outcome, tier, cost, used_after)
  return redis.call('XADD', KEYS[4], '*',
    'key_id', ARGV[1], 'tier', tier, 'ts', ARGV[12], 'endpoint', ARGV[13],
    'cost', int(cost), 'used_after', int(used_after), 'outcome', outcome,
    'idem', ARGV[6], 'extras', ARGV[14])
end

local rec = redis.call('HMGET', KEYS[1], 'tier', 'active', 'monthly_limit')
local tier, active, override = rec[1], rec[2], rec[3]
if not tier or active ~= '1' then
  return reply('invalid_key', '', -1, 0, '', ARGV[5], 0)
end

local has_idem = ARGV[6] ~= ''
if has_idem then
  local stored = redis.call('GET', KEYS[3])
  if stored then
    local d = cjson.decode(stored)
    if d.fp ~= ARGV[7] then
      return reply('key_reused', tier, -1, 0, '', ARGV[5], 0)
    end
    return reply('replayed', d.tier, tonumber(d.limit), tonumber(d.used), d.entry_id, d.reset_ms, 0)
  end
end

local limit = nil
for i = 15, #ARGV, 2 do
  if ARGV[i] == tier then
    limit = tonumber(ARGV[i + 1])
    break
  end
end
if limit == nil then
  return reply('unknown_tier', tier, -1, 0, '', ARGV[5], 0)
end
if override then
  limit = tonumber(override)
end

local cost = tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
local max_backlog = tonumber(ARGV[9])

if limit >= 0 and used + cost > limit then
  if ARGV[11] == '1' and redis.call('XLEN', KEYS[4]) <= max_backlog then
    record('denied', tier, cost, used)
  end
  return reply('denied', tier, limit, used, '', ARGV[5], 0)
end

-- "More than max_backlog entries" stops admissions (or, in trim mode, drops the
-- oldest down to max_backlog before this one is added).
local trimmed = 0
if redis.call('XLEN', KEYS[4]) > max_backlog then
  if ARGV[10] ~= 'trim' then
    return reply('backlog_full', tier, limit, used, '', ARGV[5], 0)
  end
  trimmed = redis.call('XTRIM', KEYS[4], 'MAXLEN', max_backlog)
end

local entry_id = record('allowed', tier, cost, used + cost)
local used_after = redis.call('INCRBY', KEYS[2], cost)
redis.call('PEXPIRE', KEYS[2], ARGV[4])

if has_idem then
  local stored = cjson.encode({fp = ARGV[7], tier = tier, limit = int(limit),
    used = int(used_after), entry_id = entry_id, reset_ms = ARGV[5]})
  redis.call('SET', KEYS[3], stored, 'PX', ARGV[8], 'NX')
end
return reply('allowed', tier, limit, used_after, entry_id, ARGV[5], trimmed)
