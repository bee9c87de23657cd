-- The outbox lease: taken, checked, renewed and released atomically, each a
-- compare against the caller's token. streams/outbox.py calls it.
--
-- KEYS[1]  the lease ("<prefix>outbox:lease"), holding the holder's token
-- KEYS[2]  the lease epoch counter ("<prefix>outbox:epoch")
-- KEYS[3]  the campaign's run ("<prefix>run"): wall-clock ms of its first take
-- ARGV[1]  "take" | "check" | "renew" | "release"
-- ARGV[2]  the token the caller holds ("" for none)
-- ARGV[3]  the lease in ms
-- ARGV[4]  take: a new owner id; the token is "<epoch>:<owner id>"
-- ARGV[5]  take: now in epoch ms, the run if the campaign has none yet
--
-- Returns {token, run} while the caller holds the lease (after a take, the new
-- token), or false. Only "renew" extends the lease and only "take" starts one:
-- a check never keeps a holder alive.

local holder = redis.call("GET", KEYS[1])
if holder and holder == ARGV[2] then
  if ARGV[1] == "renew" then
    redis.call("PEXPIRE", KEYS[1], ARGV[3])
  elseif ARGV[1] == "release" then
    redis.call("DEL", KEYS[1])
    return false
  end
  return {holder, redis.call("GET", KEYS[3]) or ""}
end
if holder or ARGV[1] ~= "take" then
  return false
end
local token = redis.call("INCR", KEYS[2]) .. ":" .. ARGV[4]
redis.call("SET", KEYS[1], token, "PX", ARGV[3])
redis.call("SET", KEYS[3], ARGV[5], "NX")
return {token, redis.call("GET", KEYS[3])}
