#!lua
-- audit_ack.lua: acknowledge audit entries of one shard that are committed to SQLite,
-- then trim the stream up to the oldest entry some consumer still needs.
-- Runs after COMMIT only. Never trims by length: an entry leaves the stream only when
-- it is acknowledged (or was never delivered to the group, which the MINID bound keeps).
--
-- KEYS[1]: audit stream     quotad:{qNNN}:audit   (STREAM)
-- ARGV[1]: consumer group   ARGV[2..]: entry ids persisted (or found deleted)
-- returns: {acked, trimmed}

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function less(ams, aseq, bms, bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end

local acked = 0
local top_ms, top_seq = -1, -1
local chunk = 500 -- unpack() is bounded by the Lua C stack
for first = 2, #ARGV, chunk do
  local last = math.min(first + chunk - 1, #ARGV)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, first, last))
  for i = first, last do
    local ms, seq = parse(ARGV[i])
    if ms and less(top_ms, top_seq, ms, seq) then
      top_ms, top_seq = ms, seq
    end
  end
end
if top_ms < 0 then
  return {acked, 0}
end

-- Everything up to the newest id acknowledged here was delivered to the group, so
-- below it an entry is either acknowledged or still pending; keep the oldest pending.
local min_ms, min_seq = top_ms, top_seq + 1
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
if pending[1] > 0 then
  local ms, seq = parse(pending[2])
  if less(ms, seq, min_ms, min_seq) then
    min_ms, min_seq = ms, seq
  end
end
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', min_ms, min_seq))
return {acked, trimmed}
