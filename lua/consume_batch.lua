#!lua
-- consume_batch.lua: decide n requests one after the other, in order, with one `now`,
-- and record and count the admitted ones. A single consume is a batch of one.
--
-- Two passes, because Lua does not roll back: pass 1 decides every request (reads
-- only, with the batch's own effects tracked in local tables, so the same API key or
-- idempotency key twice in one batch is decided twice, in order); pass 2 writes, the
-- audit entries first (one XADD per shard carrying all its records), then the
-- counters, then the stored decisions. A failed write never charges a key without its
-- audit record.
--
-- KEYS, per decision i (3 each): 3i-2 key record quotad:{qNNN}:key:<id> (HASH: tier,
--   active, monthly_limit, period, used, prev_period, prev_used); 3i-1 the v1 usage
--   counter quotad:{qNNN}:use:<id>:<YYYY-MM> (read once and deleted when a v1 key is
--   first counted here); 3i the idempotency entry quotad:{qNNN}:idem:<id>:<hash>.
--   Then one audit stream quotad:{qNNN}:audit per shard of the batch: KEYS[3n + s].
-- ARGV[1]: n      ARGV[2]: period label YYYY-MM      ARGV[3]: reset_at, unix ms
-- ARGV[4]: timestamp, RFC 3339 with ms       ARGV[5]: idempotency TTL ms
-- ARGV[6]: max audit backlog per shard       ARGV[7]: "reject" | "trim"
-- ARGV[8]: "1" to record denials             ARGV[9]: m, tier catalogue pairs
-- ARGV[10 .. 9+2m]: name, limit pairs (limit -1 = unlimited)
-- then per decision 7 values: key_id, stream index s (1-based), cost, idempotency key
--   ("" none), fingerprint, endpoint, audit extras (JSON object)
-- returns: {trimmed, then per decision: status, tier, limit, used, audit_ref, reset_ms}
--   status: allowed | denied | replayed | invalid_key | key_reused | unknown_tier |
--   backlog_full; limit -1 = unlimited; audit_ref = "<entry id>.<position>" (or a v1
--   entry id), "" when nothing was recorded; reset_ms of the decision's period (a
--   replay keeps the period it was decided in). Integers leave as '%d' strings: cjson and
--   tostring keep only 14 significant digits.

local function int(n)
  return string.format('%d', n)
end

local n = tonumber(ARGV[1])
local period, reset_ms, ts = ARGV[2], ARGV[3], ARGV[4]
local max_backlog, trim_mode, record_denied = tonumber(ARGV[6]), ARGV[7] == 'trim', ARGV[8] == '1'
local m = tonumber(ARGV[9])
local limits = {}
for i = 10, 9 + 2 * m, 2 do
  limits[ARGV[i]] = tonumber(ARGV[i + 1])
end
local base = 10 + 2 * m

-- The batch's own effects, so later decisions see earlier ones.
local keys_state = {}   -- record key -> {tier, active, override, used, fresh, migrated}
local idem_state = {}   -- idempotency key -> index of the decision that admitted it
local backlog = {}      -- stream index -> entries before this batch
local out = {}          -- per decision: {status, tier, limit, used, ref, stream, pos, ...}
local records = {}      -- stream index -> list of record strings
local order = {}        -- record keys in order of first admission

local function state_of(i)
  local rk = KEYS[3 * i - 2]
  local st = keys_state[rk]
  if st then return st end
  local rec = redis.call('HMGET', rk, 'tier', 'active', 'monthly_limit', 'period', 'used')
  st = {tier = rec[1], active = rec[2], override = rec[3], fresh = false, migrated = false}
  if not rec[1] then
    st.used = 0                                 -- unknown key: nothing to read
  elseif rec[4] == period then
    st.used = tonumber(rec[5])
  elseif rec[4] then
    st.used, st.fresh = 0, true                 -- a new period: the old one moves aside
    st.prev_period, st.prev_used = rec[4], rec[5]
  else
    -- Never counted here: take over the v1 counter of this period, if any.
    st.used = tonumber(redis.call('GET', KEYS[3 * i - 1]) or '0')
    st.fresh, st.migrated = true, true
  end
  keys_state[rk] = st
  return st
end

-- "More than max_backlog entries" stops admissions on the shard (SPEC §3); asked once
-- per shard per batch, and this batch adds one entry per shard.
local function full(s)
  if backlog[s] == nil then
    backlog[s] = redis.call('XLEN', KEYS[3 * n + s])
  end
  return backlog[s] > max_backlog
end

local function add_record(s, fields)
  records[s] = records[s] or {}
  local list = records[s]
  list[#list + 1] = table.concat(fields, '\31')
  return #list
end

-- Pass 1: decide, in order.
for i = 1, n do
  local a = base + 7 * (i - 1)
  local key_id, s, cost = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local idem, fp, endpoint, extras = ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local st = state_of(i)
  local ik = KEYS[3 * i]
  local d
  if not st.tier or st.active ~= '1' then
    d = {'invalid_key', '', -1, 0, '', reset_ms}
  elseif idem ~= '' and idem_state[ik] then
    local first = out[idem_state[ik]]
    if first.fp ~= fp then
      d = {'key_reused', st.tier, -1, 0, '', reset_ms}
    else
      d = {'replayed', first[2], first[3], first[4], '', reset_ms, same = idem_state[ik]}
    end
  else
    local stored = idem ~= '' and redis.call('GET', ik)
    if stored then
      local prior = cjson.decode(stored)
      if prior.fp ~= fp then
        d = {'key_reused', st.tier, -1, 0, '', reset_ms}
      else
        d = {'replayed', prior.tier, tonumber(prior.limit), tonumber(prior.used),
          prior.audit or prior.entry_id, prior.reset_ms}
      end
    else
      local limit = limits[st.tier]
      if limit == nil then
        d = {'unknown_tier', st.tier, -1, 0, '', reset_ms}
      else
        if st.override then limit = tonumber(st.override) end
        if limit >= 0 and st.used + cost > limit then
          d = {'denied', st.tier, limit, st.used, '', reset_ms}
          if record_denied and not full(s) then
            d.stream, d.pos = s, add_record(s, {key_id, st.tier, endpoint, int(cost),
              int(st.used), 'denied', idem, extras})
          end
        elseif full(s) and not trim_mode then
          d = {'backlog_full', st.tier, limit, st.used, '', reset_ms}
        else
          if st.delta == nil then
            st.delta = 0
            order[#order + 1] = 3 * i - 2
          end
          st.used = st.used + cost
          st.delta = st.delta + cost
          d = {'allowed', st.tier, limit, st.used, '', reset_ms}
          d.stream, d.pos = s, add_record(s, {key_id, st.tier, endpoint, int(cost),
            int(st.used), 'allowed', idem, extras})
          if idem ~= '' then
            d.fp, d.idem = fp, ik
            idem_state[ik] = i
          end
        end
      end
    end
  end
  out[i] = d
end

-- Pass 2: audit entries first (trimming the oldest in trim mode), then counters, then
-- the stored decisions.
local trimmed = 0
local entry_of = {}
for s, list in pairs(records) do
  local stream = KEYS[3 * n + s]
  if trim_mode and full(s) then
    trimmed = trimmed + redis.call('XTRIM', stream, 'MAXLEN', max_backlog)
  end
  local args = {'v', '2', 'ts', ts}
  for pos, rec in ipairs(list) do
    args[#args + 1] = int(pos)
    args[#args + 1] = rec
  end
  entry_of[s] = redis.call('XADD', stream, '*', unpack(args))
end
for _, k in ipairs(order) do
  local rk = KEYS[k]
  local st = keys_state[rk]
  if st.fresh then
    local fields = {'period', period, 'used', int(st.used)}
    if st.prev_period then
      fields[5], fields[6], fields[7], fields[8] = 'prev_period', st.prev_period, 'prev_used', st.prev_used
    end
    redis.call('HSET', rk, unpack(fields))
    if st.migrated then
      redis.call('DEL', KEYS[k + 1])
    end
  else
    redis.call('HINCRBY', rk, 'used', st.delta)
  end
end
local ttl = ARGV[5]
local reply = {0}
for i = 1, n do
  local d = out[i]
  if d.stream then
    d[5] = entry_of[d.stream] .. '.' .. int(d.pos)
  end
  if d.same then
    d[5] = out[d.same][5]
  end
  if d.idem then
    redis.call('SET', d.idem, cjson.encode({fp = d.fp, tier = d[2], limit = int(d[3]),
      used = int(d[4]), audit = d[5], reset_ms = reset_ms}), 'PX', ttl, 'NX')
  end
  reply[#reply + 1] = d[1]
  reply[#reply + 1] = d[2]
  reply[#reply + 1] = int(d[3])
  reply[#reply + 1] = int(d[4])
  reply[#reply + 1] = d[5]
  reply[#reply + 1] = d[6]
end
reply[1] = int(trimmed)
return reply
