#!lua
-- consume_batch.lua: decide n requests one after the other, in order, with one `now`,
-- and record and count the admitted ones. A single consume is a batch of one.
--
-- Order for every decision (SPEC §9): key -> idempotency replay -> every rate window
-- of the tier -> monthly limit -> audit backlog -> writes. A refused request consumes
-- nothing anywhere (no window, no month, no day, no audit record unless denials are
-- recorded).
--
-- Two passes, because Lua does not roll back: pass 1 decides every request (reads
-- only, with the batch's own effects tracked in local tables, so the same API key or
-- idempotency key twice in one batch is decided twice, in order); pass 2 writes, the
-- audit entries first (one XADD per shard carrying all its records), then one HSET per
-- admitted key (counter, day bucket, windows), then the stored decisions. A failed
-- write never charges a key without its audit record.
--
-- Windows are GCRA (SPEC §9): T = window / limit, burst = limit, counting requests.
-- A key's theoretical arrival time (TAT) per window is the key record field
-- `tat:<window_secs>` = "<ms>+<num>/<den>" (TAT = ms + num/den, den = the limit it was
-- written under), so a fractional T stays exact; an idle TAT is simply in the past.
-- The excess d = max(0, TAT - now) x den is an integer, the requests the window holds
-- times window_ms: a request passes when d + window_ms <= window_ms x limit (<= 2^53 - 1
-- by configuration). After a tier change the requests already made thus count against
-- the new limit, until the next admission rewrites the TAT under it.
-- Day buckets are fields `d:<YYYY-MM-DD>`; `day` holds the number (days since the
-- epoch) of the last day written. When a later day is first written, the buckets that
-- fell out of the history are deleted (at most history_days fields, once a day).
--
-- KEYS, per decision i (3 each): 3i-2 key record quotad:{qNNN}:key:<id> (HASH: tier,
--   active, monthly_limit, period, used, prev_period, prev_used, day, d:*, tat:*);
--   3i-1 the v1 usage counter quotad:{qNNN}:use:<id>:<YYYY-MM> (read once and deleted
--   when a v1 key is first counted here); 3i the idempotency entry
--   quotad:{qNNN}:idem:<id>:<hash>. Then one audit stream quotad:{qNNN}:audit per shard
--   of the batch: KEYS[3n + s].
-- ARGV[1]: n      ARGV[2]: period label YYYY-MM      ARGV[3]: reset_at, unix ms
-- ARGV[4]: timestamp, RFC 3339 with ms       ARGV[5]: idempotency TTL ms
-- ARGV[6]: max audit backlog per shard       ARGV[7]: "reject" | "trim"
-- ARGV[8]: "1" to record denials             ARGV[9]: now, unix ms
-- ARGV[10]: today, YYYY-MM-DD (UTC)          ARGV[11]: today, days since the epoch
-- ARGV[12]: history_days (day buckets kept)  ARGV[13]: m, tiers in the catalogue
-- then per tier: name, monthly limit (-1 = unlimited), k, then k x (window_secs, limit)
-- then per decision 7 values: key_id, stream index s (1-based), cost, idempotency key
--   ("" none), fingerprint, endpoint, audit extras (JSON object)
-- returns: {trimmed, then per decision: status, tier, limit, used, audit_ref, reset_ms,
--   windows}
--   status: allowed | denied | rate_limited | replayed | invalid_key | key_reused |
--   unknown_tier | backlog_full; limit -1 = unlimited; audit_ref = "<entry
--   id>.<position>" (or a v1 entry id), "" when nothing was recorded; reset_ms of the
--   decision's period (a replay keeps the period it was decided in); windows = one
--   string of space-separated integers "<d> <den>" per window of the reply's tier
--   (shortest first), after the decision: d = max(0, TAT - now) x den, draining by den
--   per ms (a replay: as the windows stand; none if the key has changed tier since).
--   Integers leave as '%d' strings: cjson and tostring keep only 14 significant digits.

local function int(n)
  return string.format('%d', n)
end

-- Appends a field and its value to an HSET argument list.
local function push(t, field, value)
  t[#t + 1] = field
  t[#t + 1] = value
end

-- floor(x / y) for integers x >= 0, y > 0, exactly (fmod is exact).
local function div(x, y)
  return (x - math.fmod(x, y)) / y
end

-- YYYY-MM-DD of a day number (days since 1970-01-01), proleptic Gregorian.
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02d', y, m, d)
end

local n = tonumber(ARGV[1])
local period, reset_ms, ts = ARGV[2], ARGV[3], ARGV[4]
local max_backlog, trim_mode, record_denied = tonumber(ARGV[6]), ARGV[7] == 'trim', ARGV[8] == '1'
local now, today, today_n, history = tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11]), tonumber(ARGV[12])
local day_field = 'd:' .. today

local limits, windows = {}, {}
local NONE = {}                       -- no windows (an unknown key)
local tat_fields, tat_index = {}, {}  -- every window field of the catalogue, once, and
                                      -- its index in the key record's HMGET reply
local a = 14
for _ = 1, tonumber(ARGV[13]) do
  local name, k = ARGV[a], tonumber(ARGV[a + 2])
  limits[name] = tonumber(ARGV[a + 1])
  local list = {}
  for j = 1, k do
    local secs = ARGV[a + 1 + 2 * j]
    local field = 'tat:' .. secs
    list[j] = {secs = secs, field = field, limit = tonumber(ARGV[a + 2 + 2 * j]),
      w = 1000 * tonumber(secs)}
    if not tat_index[field] then
      tat_fields[#tat_fields + 1] = field
      tat_index[field] = 7 + #tat_fields
    end
  end
  windows[name] = list
  a = a + 3 + 2 * k
end
local base = a

-- The batch's own effects, so later decisions see earlier ones.
local keys_state = {}   -- record key -> {tier, active, override, used, fresh, migrated, ...}
local idem_state = {}   -- idempotency key -> index of the decision that admitted it
local backlog = {}      -- stream index -> entries before this batch
local out = {}          -- per decision: {status, tier, limit, used, ref, reset, windows, ...}
local records = {}      -- stream index -> list of record strings
local order = {}        -- record keys in order of first admission

-- A stored TAT as {ms, num, den}; nil when absent or unreadable (an idle window).
local function parse_tat(v)
  if not v then return nil end
  local ms, num, den = string.match(v, '^(%d+)%+(%d+)/(%d+)$')
  if not ms or tonumber(den) == 0 then return nil end
  return {tonumber(ms), tonumber(num), tonumber(den)}
end

local function state_of(i)
  local rk = KEYS[3 * i - 2]
  local st = keys_state[rk]
  if st then return st end
  local rec = redis.call('HMGET', rk, 'tier', 'active', 'monthly_limit', 'period', 'used',
    'day', day_field, unpack(tat_fields))
  st = {tier = rec[1], active = rec[2], override = rec[3], fresh = false, migrated = false,
    day = tonumber(rec[6]), today_used = tonumber(rec[7]) or 0, rec = rec, tat = {}}
  if not rec[1] then
    st.used = 0                                 -- unknown key: nothing to read
  elseif rec[4] == period then
    st.used = tonumber(rec[5]) or 0
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

-- d = max(0, TAT - now) x den of one window of `st` (an integer), and den, the rate
-- at which d drains per ms (the limit the TAT was written under). A TAT is parsed once
-- per key and batch, from the HMGET reply.
local function excess(st, win)
  local t = st.tat[win.field]
  if t == nil then
    t = parse_tat(st.rec[tat_index[win.field]]) or false
    st.tat[win.field] = t
  end
  if not t or t[1] < now then return 0, win.limit end
  return (t[1] - now) * t[3] + t[2], t[3]
end

-- The last check of windows: excess and drain rate per window. One scratch table
-- reused by every decision (Lua tables cost more here than the arithmetic).
local c = {d = {}, den = {}}

-- Checks every window of `list` for `st` into `c`; whether one refuses.
local function check_windows(st, list)
  local refused = false
  for j, win in ipairs(list) do
    local d, den = excess(st, win)
    c.d[j], c.den[j] = d, den
    if d + win.w > win.w * win.limit then
      refused = true
    end
  end
  return refused
end

-- The reply's window text for the last check, "<d> <den>" per window: the engine
-- derives remaining, reset and wait from it (one place for those formulas). One
-- string, so a decision adds one reply element whatever the number of windows.
local function report(list)
  local r, sep = '', ''
  for j = 1, #list do
    r = r .. sep .. string.format('%d %d', c.d[j], c.den[j])
    sep = ' '
  end
  return r
end

-- The windows as they stand, for a replay answered as `tier` (it touches none); none
-- when the key has moved to another tier since, whose windows the answer would not name.
local function as_they_stand(st, list, tier)
  if tier ~= st.tier then return '' end
  check_windows(st, list)
  return report(list)
end

-- One admission in every window of the last check: TAT' = max(TAT, now) + T, i.e.
-- d' = d + window_ms, written under the current limit.
local function take_windows(st, list)
  for j, win in ipairs(list) do
    local d = c.d[j] + win.w
    local t = st.tat[win.field] or {}
    t[1], t[2], t[3] = now + div(d, win.limit), math.fmod(d, win.limit), win.limit
    st.tat[win.field] = t
    c.d[j], c.den[j] = d, win.limit
  end
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
  local list = windows[st.tier] or NONE
  local d
  if not st.tier or st.active ~= '1' then
    d = {'invalid_key', '', -1, 0, '', reset_ms, ''}
  elseif idem ~= '' and idem_state[ik] then
    local first = out[idem_state[ik]]
    if first.fp ~= fp then
      d = {'key_reused', st.tier, -1, 0, '', reset_ms, ''}
    else
      d = {'replayed', first[2], first[3], first[4], '', reset_ms,
        as_they_stand(st, list, first[2]), same = idem_state[ik]}
    end
  else
    local stored = idem ~= '' and redis.call('GET', ik)
    if stored then
      local prior = cjson.decode(stored)
      if prior.fp ~= fp then
        d = {'key_reused', st.tier, -1, 0, '', reset_ms, ''}
      else
        d = {'replayed', prior.tier, tonumber(prior.limit), tonumber(prior.used),
          prior.audit or prior.entry_id, prior.reset_ms, as_they_stand(st, list, prior.tier)}
      end
    else
      local limit = limits[st.tier]
      if limit == nil then
        d = {'unknown_tier', st.tier, -1, 0, '', reset_ms, ''}
      else
        if st.override then limit = tonumber(st.override) end
        local refused = check_windows(st, list)
        if refused then
          d = {'rate_limited', st.tier, limit, st.used, '', reset_ms, report(list)}
          if record_denied and not full(s) then
            d.stream, d.pos = s, add_record(s, {key_id, st.tier, endpoint, int(cost),
              int(st.used), 'rate_limited', idem, extras})
          end
        elseif limit >= 0 and st.used + cost > limit then
          d = {'denied', st.tier, limit, st.used, '', reset_ms, report(list)}
          if record_denied and not full(s) then
            d.stream, d.pos = s, add_record(s, {key_id, st.tier, endpoint, int(cost),
              int(st.used), 'denied', idem, extras})
          end
        elseif full(s) and not trim_mode then
          d = {'backlog_full', st.tier, limit, st.used, '', reset_ms, report(list)}
        else
          if not st.list then
            st.list = list                      -- the windows this key writes in pass 2
            order[#order + 1] = 3 * i - 2
          end
          take_windows(st, list)
          st.used = st.used + cost
          st.today_used = st.today_used + cost
          d = {'allowed', st.tier, limit, st.used, '', reset_ms, report(list)}
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
  local fields = {'used', int(st.used), day_field, int(st.today_used)}
  if st.fresh then
    push(fields, 'period', period)
    if st.prev_period then
      push(fields, 'prev_period', st.prev_period)
      push(fields, 'prev_used', st.prev_used or '0')
    end
  end
  -- Only forward: a node whose clock is behind across midnight does not move it back.
  if not st.day or today_n > st.day then
    push(fields, 'day', int(today_n))
    if st.day then
      -- Present: days after st.day - history; keep: days after today_n - history.
      local gone = {}
      for day = st.day - history + 1, math.min(st.day, today_n - history) do
        gone[#gone + 1] = 'd:' .. civil(day)
      end
      if #gone > 0 then
        redis.call('HDEL', rk, unpack(gone))
      end
    end
  end
  for _, win in ipairs(st.list) do
    local t = st.tat[win.field]
    push(fields, win.field, string.format('%d+%d/%d', t[1], t[2], t[3]))
  end
  redis.call('HSET', rk, unpack(fields))
  if st.migrated then
    redis.call('DEL', KEYS[k + 1])
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
  reply[#reply + 1] = d[7]
end
reply[1] = int(trimmed)
return reply
