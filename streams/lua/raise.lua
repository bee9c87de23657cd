-- Raise the surge alerts of one judged minute, atomically with the judge's cursor.
-- Mirrors processors/surge.py:cooled; streams/alerts.py calls it.
--
-- KEYS[1]  the campaign's meta hash ("<prefix>meta"); every key shares its slot
-- ARGV[1]  key prefix, e.g. "presale:{d11-2025}:"
-- ARGV[2]  the judged minute (epoch ms)
-- ARGV[3]  the minute the caller read as the last judged one ("" for none)
-- ARGV[4]  the minute's candidates as JSON: [[scope, key, alert_id, record], ...]
-- ARGV[5]  the cooldown in ms
--
-- Returns {"moved", last_judged} and changes nothing when another worker judged
-- a minute meanwhile (minutes are judged once each, in order); otherwise
-- {"ok", record...} with the records of the alerts raised.

local P = ARGV[1]
local meta = KEYS[1]
local last = redis.call("HGET", meta, "surge_through")
if (last or "") ~= ARGV[3] then
  return {"moved", last or ""}
end
redis.call("HSET", meta, "surge_through", ARGV[2])

local minute = tonumber(ARGV[2])
local cooldown = tonumber(ARGV[5])
local last_key = P .. "al:last"
local raised = {"ok"}
for _, c in ipairs(cjson.decode(ARGV[4])) do
  local field = c[1] .. "|" .. c[2]
  local previous = redis.call("HGET", last_key, field)
  if not previous or minute - tonumber(previous) >= cooldown then
    redis.call("HSET", last_key, field, ARGV[2])
    redis.call("XADD", P .. "alerts", "*", "value", c[4])
    redis.call("XADD", P .. "outbox", "*", "topic", "alerts",
      "id", c[3], "key", c[2], "value", c[4])
    raised[#raised + 1] = c[4]
  end
end
return raised
