-- Fold the shards' per-batch aggregates into the campaign-wide slot, each once.
--
-- A shard's step (lua/apply.lua) appends its batch aggregate to the shard's
-- `agg` stream under the shard's next sequence number. This step applies
-- aggregates in each shard's sequence order, fenced by the campaign's `folded`
-- hash (shard -> last sequence folded): an aggregate already folded is
-- skipped, and one that would leave a hole (an earlier aggregate of its shard
-- not folded yet: a worker died between the steps) stops the step before any
-- write, answering {"gap", shard, folded}: the caller reads the shard's stream
-- from there and folds again. So a crash between a shard's step and this one
-- loses and doubles nothing.
--
-- KEYS[1]  the campaign's `folded` hash; every key shares the campaign's slot
-- ARGV[1]  the campaign's key prefix
-- ARGV[2]  JSON: {"a": [[shard, seq]...] (each shard's in sequence order),
--          "t": {brand: [[kind, threshold]...]}, "k": [shard...]}
-- ARGV[6]  JSON: every shard's key prefix, when the shards' keys are on this
--          server too (one Redis); empty on a Redis Cluster
-- ARGV[7...] the aggregates of "a", in its order, as the shards' steps wrote
--          them: {"b": brands, "r": [[brand, gross]...], "f": [[brand, amount,
--          ts, at]...], "m": rooms}: "f" lists the shard's new first-hour
--          orders, "at" their order in the batch (aggregates of one batch
--          merge by it)
-- ARGV[3]  wall-clock now in ms (milestones' detected_at_ms)
-- ARGV[4]  PRESALE_MAX_REGIONS: regions counted under a name not decided yet
--          (an aggregate's "p": [[region, at]...]) are admitted, in batch
--          order, while the campaign holds fewer (`rgs`), else refused (`rgx`)
--
-- ARGV[5]  JSON: the batch's watermark samples (several shards: the campaign
--          keeps its latest 64 in `wm` and its watermark in `meta`, as one
--          shard's step does; processors/counting.py:watermark_from)
--
-- With the shards' prefixes, an aggregate is folded only if its shard's stream
-- still holds it as given: when Redis lost its last writes (a restart from an
-- AOF written every second) between a step and its fold, the worker holds an
-- aggregate no shard made any more; its records are applied again, and their
-- new aggregate may take the same sequence number. Such a fold answers
-- {"lost", shard, folded} before any write: the caller takes that shard's
-- aggregates from its stream instead.
--
-- Returns {"ok", watermark_ms, ring_json, milestone_json...}, {"gap", shard,
-- folded} or {"lost", shard, folded}.

local P = ARGV[1]
local input = cjson.decode(ARGV[2])
local now_ms = ARGV[3]
local max_regions = tonumber(ARGV[4])
local folded_key = KEYS[1]

-- fmt() and chunked() come from lua/common.lua.

-- Redis does not roll a script back when a command fails halfway: every key's
-- type is checked before the first write.
for key, kind in pairs({[folded_key] = "hash", [P .. "brands"] = "set",
    [P .. "rooms"] = "string", [P .. "rank"] = "zset", [P .. "fh"] = "zset",
    [P .. "ms"] = "hash", [P .. "outbox"] = "stream", [P .. "rgs"] = "set",
    [P .. "rgx"] = "set", [P .. "wm"] = "list", [P .. "meta"] = "hash"}) do
  local t = redis.call("TYPE", key)
  t = type(t) == "table" and t.ok or t
  if t ~= "none" and t ~= kind then
    return redis.error_reply("WRONGTYPE " .. key .. " holds a " .. t
      .. ", not a " .. kind .. ": nothing was folded")
  end
end

-- 1. Which aggregates are new; refuse a hole before writing anything, but
-- where the caller found the missing aggregates gone for good (input.k).
local last = {}
local stored = {}
local todo = {}
local gone = {}
for _, shard in ipairs(input.k or {}) do
  gone[tostring(shard)] = true
end
local shard_prefixes = ARGV[6] ~= "" and cjson.decode(ARGV[6]) or nil
for i, a in ipairs(input.a) do
  local shard, seq = tostring(a[1]), a[2]
  if last[shard] == nil then
    last[shard] = tonumber(redis.call("HGET", folded_key, shard) or "0")
    stored[shard] = last[shard]
  end
  if seq > last[shard] + 1 and gone[shard] then
    last[shard] = seq - 1
    gone[shard] = nil
  end
  if seq == last[shard] + 1 then
    local raw = ARGV[6 + i]
    if shard_prefixes then
      local id = fmt(seq) .. "-1"
      local held = redis.call("XRANGE", shard_prefixes[a[1] + 1] .. "agg", id, id)
      if #held == 0 or held[1][2][2] ~= raw then
        return {"lost", shard, fmt(stored[shard])}
      end
    end
    last[shard] = seq
    todo[#todo + 1] = cjson.decode(raw)
  elseif seq > last[shard] + 1 then
    return {"gap", shard, fmt(last[shard])}
  end
end
local RING = 64
local MIN_SAMPLES = 32
local meta = P .. "meta"
local ring_key = P .. "wm"
local function watermark()
  -- The campaign's watermark after the batch's samples: the median of the
  -- latest 64 samples once there are 32, never moving back.
  local wm = tonumber(redis.call("HGET", meta, "watermark_ms") or "0")
  if ARGV[5] == "" then  -- one shard: its step keeps the watermark
    return {fmt(wm), "[]"}
  end
  local samples = cjson.decode(ARGV[5])
  if #samples > 0 then
    local pushed = {}
    for i = 1, #samples do
      pushed[i] = fmt(samples[i])
    end
    redis.call("LPUSH", ring_key, unpack(pushed))
    redis.call("LTRIM", ring_key, 0, RING - 1)
  end
  local ring = redis.call("LRANGE", ring_key, 0, RING - 1)
  if #ring >= MIN_SAMPLES then
    local sorted = {}
    for i = 1, #ring do
      sorted[i] = tonumber(ring[i])
    end
    table.sort(sorted)
    local median = sorted[math.floor((#sorted - 1) / 2) + 1]
    if median > wm then
      wm = median
      redis.call("HSET", meta, "watermark_ms", fmt(wm))
    end
  end
  return {fmt(wm), cjson.encode(ring)}
end

if #todo == 0 then
  local wm = watermark()
  return {"ok", wm[1], wm[2]}
end

-- 2. Sum what the aggregates add: brands, rooms, the rank, the first hour.
local brands, seen_brand = {}, {}
local rooms = {}
local gross = {}
local steps = {}   -- brand -> {{amount, ts, at}...}
local regions = {}  -- {{region, at}...}
for _, agg in ipairs(todo) do
  for _, r in ipairs(agg.p or {}) do
    regions[#regions + 1] = {r[1], tonumber(r[2])}
  end
  for _, b in ipairs(agg.b) do
    if not seen_brand[b] then
      seen_brand[b] = true
      brands[#brands + 1] = b
    end
  end
  for _, r in ipairs(agg.m) do
    rooms[#rooms + 1] = r
  end
  for _, r in ipairs(agg.r) do
    gross[r[1]] = (gross[r[1]] or 0) + tonumber(r[2])
  end
  for _, f in ipairs(agg.f) do
    local s = steps[f[1]]
    if not s then
      s = {}
      steps[f[1]] = s
    end
    s[#s + 1] = {tonumber(f[2]), tonumber(f[3]), tonumber(f[4])}
  end
end

-- 3. Write: folded sequences, brands, rooms, the rank.
for shard, seq in pairs(last) do
  redis.call("HSET", folded_key, shard, fmt(seq))
end
if #brands > 0 then
  chunked("SADD", P .. "brands", brands)
end
if #rooms > 0 then
  chunked("PFADD", P .. "rooms", rooms)
end
for b, g in pairs(gross) do
  redis.call("ZINCRBY", P .. "rank", fmt(g), b)
end

-- Regions not decided yet: admitted in the order the batches met them.
if #regions > 0 then
  table.sort(regions, function(p, q) return p[2] < q[2] end)
  local size = redis.call("SCARD", P .. "rgs")
  for _, r in ipairs(regions) do
    local name = r[1]
    if redis.call("SISMEMBER", P .. "rgs", name) == 0
        and redis.call("SISMEMBER", P .. "rgx", name) == 0 then
      if size < max_regions then
        redis.call("SADD", P .. "rgs", name)
        size = size + 1
      else
        redis.call("SADD", P .. "rgx", name)
      end
    end
  end
end

-- 4. Milestones, decided on the exact campaign-wide first-hour GMV: a brand's
-- new first-hour orders in batch order, each crossing recorded at the event
-- time of the order that crossed it.
local reached = {}
local ms_key = P .. "ms"
for brand, s in pairs(steps) do
  table.sort(s, function(p, q) return p[3] < q[3] end)
  local added = 0
  for i = 1, #s do
    added = added + s[i][1]
  end
  local after = tonumber(redis.call("ZINCRBY", P .. "fh", fmt(added), brand))
  local targets = input.t[brand]
  if targets then
    table.sort(targets, function(p, q) return p[2] < q[2] end)
    local running = after - added
    local next_target = 1
    for i = 1, #s do
      running = running + s[i][1]
      while next_target <= #targets and running >= targets[next_target][2] do
        local tg = targets[next_target]
        next_target = next_target + 1
        local field = tg[1] .. ":" .. brand .. ":" .. fmt(tg[2])
        if redis.call("HEXISTS", ms_key, field) == 0 then
          local record = '{"kind":' .. cjson.encode(tg[1])
            .. ',"brand_id":' .. cjson.encode(brand)
            .. ',"threshold_fen":' .. fmt(tg[2])
            .. ',"crossed_at_ms":' .. fmt(s[i][2])
            .. ',"detected_at_ms":' .. now_ms .. '}'
          reached[#reached + 1] = record
          redis.call("HSET", ms_key, field, record)
          redis.call("XADD", P .. "outbox", "*", "topic", "milestones",
            "id", field, "key", brand, "value", record)
        end
      end
    end
  end
end

local wm = watermark()
local result = {"ok", wm[1], wm[2]}
for i = 1, #reached do
  result[#result + 1] = reached[i]
end
return result
