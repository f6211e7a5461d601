#!lua
-- audit_ack.lua: acknowledge audit entries that are committed to SQLite, for any number
-- of shard streams in one call, then trim each stream up to the oldest entry some
-- consumer still needs. Runs after COMMIT only. Never trims by length: an entry leaves
-- its stream only when it is acknowledged (or was never delivered to the group, which
-- the MINID bound keeps).
-- On one Redis the streams may be of several slots; on a Cluster call it per shard.
--
-- KEYS[1..k]: audit streams   quotad:{qNNN}:audit   (STREAM)
-- ARGV[1]: consumer group
-- ARGV[2..k+1]: how many entry ids follow for each stream, in KEYS order
-- ARGV[k+2..]: the entry ids persisted (or found deleted), stream after stream
-- returns: {acked, trimmed}, summed over the streams

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function less(ams, aseq, bms, bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end

local group = ARGV[1]
local chunk = 500 -- unpack() is bounded by the Lua C stack

-- Acknowledges ARGV[first..last] on stream `key` and trims it; returns acked, trimmed.
local function settle(key, first, last)
  local acked = 0
  local top_ms, top_seq = -1, -1
  for from = first, last, chunk do
    local to = math.min(from + chunk - 1, last)
    acked = acked + redis.call('XACK', key, group, unpack(ARGV, from, to))
    for i = from, to do
      local ms, seq = parse(ARGV[i])
      if ms and less(top_ms, top_seq, ms, seq) then
        top_ms, top_seq = ms, seq
      end
    end
  end
  if top_ms < 0 then
    return acked, 0
  end
  -- Everything up to the newest id acknowledged here was delivered to the group, so
  -- below it an entry is either acknowledged or still pending; keep the oldest pending.
  local min_ms, min_seq = top_ms, top_seq + 1
  local pending = redis.call('XPENDING', key, group)
  if pending[1] > 0 then
    local ms, seq = parse(pending[2])
    if less(ms, seq, min_ms, min_seq) then
      min_ms, min_seq = ms, seq
    end
  end
  return acked, redis.call('XTRIM', key, 'MINID', string.format('%d-%d', min_ms, min_seq))
end

local acked, trimmed = 0, 0
local next_id = #KEYS + 2
for k = 1, #KEYS do
  local n = tonumber(ARGV[k + 1])
  if n > 0 then
    local a, t = settle(KEYS[k], next_id, next_id + n - 1)
    acked, trimmed = acked + a, trimmed + t
  end
  next_id = next_id + n
end
return {acked, trimmed}
