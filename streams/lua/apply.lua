-- Apply one batch plan to a campaign's state, atomically with its Kafka offsets.
-- Mirrors processors/state.py:apply_plan; tests hold the two to the same results.
--
-- KEYS[1]  the campaign's offsets hash ("<prefix>off"); every key shares its slot
-- ARGV[1]  key prefix, e.g. "presale:{d11-2025}:"
-- ARGV[2]  the plan as JSON (streams/store.py:encode_plan)
-- ARGV[3]  wall-clock now in ms (milestones' detected_at_ms)
--
-- Returns {"stale", partition, applied_offset} and changes nothing when another
-- worker moved a partition past the plan's starting offset; otherwise
-- {"ok", new_events, duplicates, milestone_json...}.

local P = ARGV[1]
local plan = cjson.decode(ARGV[2])
local now_ms = ARGV[3]

local function fmt(n)
  return string.format("%.0f", n)
end

-- Add to integer fields of a hash with one HMGET and one HSET (in chunks of
-- 2,000 fields: the HSET's 4,000 values stay under unpack's limit of about
-- 8,000, Lua's C stack), not a HINCRBY a field: a batch touches tens of thousands of
-- counter fields and surge cells. Lua's doubles add exactly below 2^53 (¥90
-- trillion of fen): a field at or past that, a delta with a carry (`his`, in
-- units of CARRY; none when nil), or a value that is not a number takes
-- HINCRBY, Redis's exact 64-bit add.
local CARRY = 2 ^ 50
local EXACT = 2 ^ 53
local FIELDS_CHUNK = 2000
local function add_fields(key, fields, los, his)
  for i = 1, #fields, FIELDS_CHUNK do
    local j = math.min(i + FIELDS_CHUNK - 1, #fields)
    local current = redis.call("HMGET", key, unpack(fields, i, j))
    local args, n = {}, 0
    for k = i, j do
      local lo, hi = los[k], his and his[k] or 0
      local v = current[k - i + 1]
      local old = 0
      if v then
        old = tonumber(v)
      end
      local new = old and old + lo
      if hi == 0 and new and old > -EXACT and old < EXACT
          and new > -EXACT and new < EXACT then
        args[n + 1] = fields[k]
        args[n + 2] = fmt(new)
        n = n + 2
      else
        for _, m in ipairs({lo, hi * CARRY}) do
          if m ~= 0 then
            redis.call("HINCRBY", key, fields[k], fmt(m))
          end
        end
      end
    end
    if n > 0 then
      redis.call("HSET", key, unpack(args, 1, n))
    end
  end
end

-- 1. Offsets: refuse the plan if any partition moved since it was built.
local off_key = KEYS[1]
for _, o in ipairs(plan.o) do
  local applied = redis.call("HGET", off_key, o[1])
  local applied_n = applied and tonumber(applied) or -1
  if applied_n ~= o[2] then
    return {"stale", o[1], fmt(applied_n)}
  end
end
for _, o in ipairs(plan.o) do
  redis.call("HSET", off_key, o[1], fmt(o[3]))
end

local meta = P .. "meta"
for reason, n in pairs(plan.dl) do
  redis.call("HINCRBY", P .. "dl", reason, n)
end
if plan.ow > 0 then
  redis.call("HINCRBY", meta, "out_of_window", plan.ow)
end

-- Surge traffic per event-time minute: (scope|key) -> records, one hash a
-- minute, and the index of minutes the surge judge walks (streams/alerts.py).
for minute, cells in pairs(plan.m) do
  local mk = P .. "sm:" .. minute
  add_fields(mk, cells[1], cells[2])  -- [fields], [records]
  redis.call("PEXPIRE", mk, plan.mt)
  redis.call("ZADD", P .. "sm:idx", minute, minute)
end
-- The surge clock, per partition: its latest counted event time, never ahead of
-- the wall clock (an event from a wrong clock cannot end minutes early), with
-- the wall time it moved. The judge takes the slowest active partition's.
local clock_key = P .. "clock"
for tp, high in pairs(plan.pc) do
  if tp ~= "" and high > 0 then
    local ts = math.min(high, tonumber(now_ms))
    local old = redis.call("HGET", clock_key, tp)
    local old_ts = old and tonumber(string.match(old, "^(%d+)")) or 0
    if old_ts > ts then
      ts = old_ts
    end
    redis.call("HSET", clock_key, tp, fmt(ts) .. ":" .. now_ms)
  end
end

-- 2. Dedupe generation from the watermark (latest counted event time).
local wm = tonumber(redis.call("HGET", meta, "watermark_ms") or "0")
if plan.w > wm then
  wm = plan.w
  redis.call("HSET", meta, "watermark_ms", fmt(wm))
end
local gen = math.floor(wm / plan.h)
local gens_key = P .. "dd:gens"
local has_prev = redis.call("SISMEMBER", gens_key, fmt(gen - 1)) == 1
redis.call("SADD", gens_key, fmt(gen))
for _, g in ipairs(redis.call("SMEMBERS", gens_key)) do
  if tonumber(g) < gen - 1 then
    for shard = 0, plan.s - 1 do
      redis.call("UNLINK", P .. "dd:" .. g .. ":" .. shard)
    end
    redis.call("SREM", gens_key, g)
  end
end
local dd_cur = P .. "dd:" .. fmt(gen) .. ":"
local dd_prev = P .. "dd:" .. fmt(gen - 1) .. ":"

-- Dedupe the whole batch first. The plan's ids come grouped by shard
-- ([shard, [ids, owners]]), each id
-- once (its first occurrence in the batch), with its owner: the index of its
-- tally or line, counting clicks, carts, orders, cancels in turn (store.py).
-- Per shard one SMISMEMBER in the previous generation (when there is one), one
-- in the current one and one SADD of the new ids. (unpack() is bounded by
-- Lua's C stack, 8,000 values: long lists go in chunks.)
local CHUNK = 4000
local function mismember(key, list)
  if #list <= CHUNK then
    return redis.call("SMISMEMBER", key, unpack(list))
  end
  local found = {}
  for i = 1, #list, CHUNK do
    local part = redis.call("SMISMEMBER", key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
    for k = 1, #part do
      found[#found + 1] = part[k]
    end
  end
  return found
end
local fresh = {}  -- owner -> its ids Redis had not seen
for _, group in ipairs(plan.d) do
  local shard, members, owners = group[1], group[2][1], group[2][2]
  if has_prev then
    local old = mismember(dd_prev .. shard, members)
    local m, o = {}, {}
    for i = 1, #members do
      if old[i] == 0 then
        m[#m + 1] = members[i]
        o[#o + 1] = owners[i]
      end
    end
    members, owners = m, o
  end
  if #members > 0 then
    local key = dd_cur .. shard
    local seen = mismember(key, members)
    local new, n = {}, 0
    for i = 1, #members do
      if seen[i] == 0 then
        n = n + 1
        new[n] = members[i]
        local owner = owners[i]
        fresh[owner] = (fresh[owner] or 0) + 1
      end
    end
    for i = 1, n, CHUNK do
      redis.call("SADD", key, unpack(new, i, math.min(i + CHUNK - 1, n)))
    end
  end
end

-- 3. Deduplicate and aggregate in Lua tables; one HINCRBY per counter at the end.
local delta = {}     -- "brand\0channel" -> {brand, channel, counters}
local buyers = {}    -- "brand\0channel" -> list of user ids
local steps = {}     -- brand index -> list of {amount, ts} of new first-hour orders
local new_events, duplicates = 0, 0

local function counters(b, c)
  local k = b .. "\0" .. c
  local d = delta[k]
  if not d then
    d = {b, c, {}}
    delta[k] = d
  end
  return d[3], k
end

-- Lua numbers are doubles, exact to 2^53: a batch's sum carries every CARRY
-- (2^50) into name.."^", so 20,000 orders of 10^12 fen stay exact.
local function add(t, name, n)
  local v = (t[name] or 0) + n
  if v >= CARRY or v <= -CARRY then
    local hi = v >= 0 and math.floor(v / CARRY) or -math.floor(-v / CARRY)
    t[name .. "^"] = (t[name .. "^"] or 0) + hi
    v = v - hi * CARRY
  end
  t[name] = v
end

local owner = 0
for _, spec in ipairs({{plan.c, "clicks"}, {plan.k, "carts"}}) do
  local name = spec[2]
  for _, tally in ipairs(spec[1]) do
    -- {brand, channel, ids}: its new ids are fresh[owner]
    local new = fresh[owner] or 0
    owner = owner + 1
    new_events = new_events + new
    duplicates = duplicates + tally[3] - new
    if new > 0 then
      add(counters(tally[1], tally[2]), name, new)
    end
  end
end

for _, r in ipairs(plan.r) do
  -- {brand, channel, amount, qty, vip, user, ts, first_hour}
  local new = fresh[owner]
  owner = owner + 1
  if new then
    new_events = new_events + 1
    local t, k = counters(r[1], r[2])
    add(t, "orders", 1)
    add(t, "units", r[4])
    add(t, "gross_gmv_fen", r[3])
    add(t, "net_gmv_fen", r[3])
    add(t, "vip_orders", r[5])
    local users = buyers[k]
    if not users then
      users = {}
      buyers[k] = users
    end
    users[#users + 1] = r[6]
    if r[8] == 1 then
      add(t, "first_hour_gross_gmv_fen", r[3])
      local s = steps[r[1]]
      if not s then
        s = {}
        steps[r[1]] = s
      end
      s[#s + 1] = {r[3], r[7]}
    end
  else
    duplicates = duplicates + 1
  end
end

for _, x in ipairs(plan.x) do
  -- {brand, channel, amount}
  local new = fresh[owner]
  owner = owner + 1
  if new then
    new_events = new_events + 1
    local t = counters(x[1], x[2])
    add(t, "cancels", 1)
    add(t, "net_gmv_fen", -x[3])
  else
    duplicates = duplicates + 1
  end
end

-- 4. Write the aggregated deltas: brand, brand x channel, totals, channel.
local brands = plan.b
local channels = plan.n
local function pfadd(key, users)
  -- unpack() is bounded by Lua's C stack (8,000 values): add in chunks.
  for i = 1, #users, 1000 do
    redis.call("PFADD", key, unpack(users, i, math.min(i + 999, #users)))
  end
end
-- Distinct livestream rooms (12 KB, within 1%): presale_distinct_ids{kind="rooms"}.
if plan.rm then
  pfadd(P .. "rooms", plan.rm)
end

-- Only brand x channel is stored per brand: a brand's counters are the sum of
-- its channels and its buyers the union of its channels' HyperLogLogs (one
-- PFCOUNT over several keys), read when the report is built. Channel totals are
-- summed here first, so each (channel, counter) is written once per batch.
for i = 1, #brands, 1000 do
  redis.call("SADD", P .. "brands", unpack(brands, i, math.min(i + 999, #brands)))
end
local pending = {}  -- key -> {fields, los, his}
local function queue_add(key, field, lo, hi)
  local w = pending[key]
  if not w then
    w = {{}, {}, {}}
    pending[key] = w
  end
  local i = #w[1] + 1
  w[1][i] = field
  w[2][i] = lo
  w[3][i] = hi
end

local per_channel = {}    -- channel -> counters (with carries)
local channel_users = {}  -- channel -> list of user ids
local gross_by_brand = {} -- brand index -> gross delta
local after_fh = {}       -- brand index -> first-hour gross after this batch
for k, d in pairs(delta) do
  local brand = brands[d[1] + 1]
  local ch = channels[d[2] + 1]
  local bckey = P .. "bc:" .. brand
  local totals = per_channel[ch]
  if not totals then
    totals = {}
    per_channel[ch] = totals
  end
  for name, lo in pairs(d[3]) do
    if string.sub(name, -1) ~= "^" then
      local hi = d[3][name .. "^"] or 0
      add(totals, name, lo)
      if hi ~= 0 then
        totals[name .. "^"] = (totals[name .. "^"] or 0) + hi
      end
      queue_add(bckey, ch .. ":" .. name, lo, hi)
    end
  end
  if d[3].gross_gmv_fen then
    local g = d[3].gross_gmv_fen + (d[3]["gross_gmv_fen^"] or 0) * CARRY
    gross_by_brand[d[1]] = (gross_by_brand[d[1]] or 0) + g
  end
  local users = buyers[k]
  if users then
    pfadd(P .. "u:bc:" .. brand .. ":" .. ch, users)
    local all = channel_users[ch]
    if not all then
      all = {}
      channel_users[ch] = all
    end
    for i = 1, #users do
      all[#all + 1] = users[i]
    end
  end
end
for ch, totals in pairs(per_channel) do
  for name, lo in pairs(totals) do
    if string.sub(name, -1) ~= "^" then
      queue_add(P .. "ch", ch .. ":" .. name, lo, totals[name .. "^"] or 0)
    end
  end
end
for key, w in pairs(pending) do
  add_fields(key, w[1], w[2], w[3])
end
for ch, users in pairs(channel_users) do
  pfadd(P .. "u:ch:" .. ch, users)
end
for b, g in pairs(gross_by_brand) do
  redis.call("ZINCRBY", P .. "rank", fmt(g), brands[b + 1])
end
for b, s in pairs(steps) do
  local fh = 0
  for i = 1, #s do
    fh = fh + s[i][1]
  end
  after_fh[b] = tonumber(redis.call("ZINCRBY", P .. "fh", fmt(fh), brands[b + 1]))
end

-- 5. Milestones: decided here, so no two workers can both emit one.
local reached = {}
local ms_key = P .. "ms"
for b, s in pairs(steps) do
  local brand = brands[b + 1]
  local targets = plan.t[tostring(b)]
  if targets then
    table.sort(targets, function(p, q) return p[2] < q[2] end)
    local running = after_fh[b]
    for i = 1, #s do
      running = running - s[i][1]
    end
    local next_target = 1
    for i = 1, #s do
      running = running + s[i][1]
      while next_target <= #targets and running >= targets[next_target][2] do
        local tg = targets[next_target]
        next_target = next_target + 1
        local field = tg[1] .. ":" .. brand .. ":" .. fmt(tg[2])
        local record = '{"kind":' .. cjson.encode(tg[1])
          .. ',"brand_id":' .. cjson.encode(brand)
          .. ',"threshold_fen":' .. fmt(tg[2])
          .. ',"crossed_at_ms":' .. fmt(s[i][2])
          .. ',"detected_at_ms":' .. now_ms .. '}'
        if redis.call("HSETNX", ms_key, field, record) == 1 then
          redis.call("XADD", P .. "outbox", "*", "topic", "milestones",
            "id", field, "key", brand, "value", record)
          reached[#reached + 1] = record
        end
      end
    end
  end
end

local result = {"ok", new_events, duplicates}
for i = 1, #reached do
  result[#result + 1] = reached[i]
end
return result
