-- Apply one batch plan to one shard of a campaign's state, atomically with the
-- shard's Kafka offsets (streams/keys.py). What must be decided campaign-wide
-- (the rank, the first-hour GMV milestones are decided on, the brands, the
-- rooms) the step appends to the shard's `agg` stream under the shard's next
-- sequence number, and lua/fold.lua moves it to the campaign's slot, once.
-- processors/state.py:apply_plan keeps the same rules in memory for the worker's
-- unit tests; tests run the same cases through this script (tests/streams).
--
-- KEYS[1]  the shard's offsets hash ("<prefix>off"); every key shares its slot
-- ARGV[1]  the shard's key prefix, e.g. "presale:{d11-2025}:"
-- ARGV[2]  the plan as MessagePack (streams/store.py:encode_plan)
-- ARGV[3]  wall-clock now in ms (milestones' detected_at_ms)
--
-- Returns {"stale", partition, applied_offset} and changes nothing when the plan
-- does not begin right after a partition's stored offset (another worker moved
-- it, or Redis lost writes); otherwise {"ok", new_events, duplicates, late,
-- seq, aggregate_json}, seq 0 when the batch left nothing to fold.
--
-- Redis does not roll a script back when a command fails halfway, so the
-- script reads everything first and checks the type of every key it will only
-- write (a key of another type, or a Redis Cluster key that is not local, fails
-- there), then writes, and writes the offsets last: a step that fails changes
-- nothing, and a step whose offsets are stored was applied whole.

local P = ARGV[1]
local plan = cmsgpack.unpack(ARGV[2])
local now_ms = ARGV[3]

-- fmt() and chunked() come from lua/common.lua.

-- 1. Offsets: refuse the plan unless each partition's stored offset is the one
-- the plan follows (the offset before its first record).
local off_key = KEYS[1]
for _, o in ipairs(plan.o) do
  local applied = redis.call("HGET", off_key, o[1])
  local applied_n = applied and tonumber(applied) or -1
  if applied_n ~= o[2] then
    return {"stale", o[1], fmt(applied_n)}
  end
end

-- Everything below is read first and written in section 9.
local writes = {}  -- closures, run in order once every read and check passed
local function later(f)
  writes[#writes + 1] = f
end
local expect = {}  -- key -> the type it must have ("none" is always fine)
local function must_be(key, kind)
  expect[key] = kind
end

local meta = P .. "meta"
local CARRY = 2 ^ 50
local EXACT = 2 ^ 53

-- Counter hashes: key -> {fields, lows, highs}; each is read with HMGET and
-- written with one HSET (2,000 fields at a time: an HSET's 4,000 values stay
-- under unpack's limit) in section 9.
-- A field queued twice (two facets' profiles adding to one region) adds up.
local pending = {}
local function queue_add(key, field, lo, hi)
  local w = pending[key]
  if not w then
    w = {{}, {}, {}, {}}
    pending[key] = w
  end
  local i = w[4][field]
  if i then
    local v = w[2][i] + lo
    local h = w[3][i] + (hi or 0)
    if v >= CARRY or v <= -CARRY then
      local c = v >= 0 and math.floor(v / CARRY) or -math.floor(-v / CARRY)
      h = h + c
      v = v - c * CARRY
    end
    w[2][i] = v
    w[3][i] = h
    return
  end
  i = #w[1] + 1
  w[4][field] = i
  w[1][i] = field
  w[2][i] = lo
  w[3][i] = hi or 0
end

-- 2. The watermark: the median of the latest 64 samples of all batches, once
-- there are 32, never moving back (processors/counting.py:watermark_from).
-- With one shard the step keeps them; with several, the fold (plan.w).
local RING = 64
local MIN_SAMPLES = 32
local ring_key = P .. "wm"
local wm = tonumber(redis.call("HGET", meta, "watermark_ms") or "0")
local ring = redis.call("LRANGE", ring_key, 0, RING - 1)
local samples = plan.ws
if plan.w then
  -- Several shards: the campaign's watermark, as the worker computed it from
  -- the campaign's samples (lua/fold.lua keeps them), never back here either.
  samples = {}
  if plan.w > wm then
    wm = plan.w
    later(function() redis.call("HSET", meta, "watermark_ms", fmt(wm)) end)
  end
end
if #samples > 0 then
  local merged = {}
  for i = #samples, 1, -1 do
    merged[#merged + 1] = samples[i]
  end
  for i = 1, #ring do
    if #merged >= RING then
      break
    end
    merged[#merged + 1] = tonumber(ring[i])
  end
  table.sort(merged)
  local median = merged[math.floor((#merged - 1) / 2) + 1]
  if #merged >= MIN_SAMPLES and median > wm then
    wm = median
    later(function() redis.call("HSET", meta, "watermark_ms", fmt(wm)) end)
  end
  local pushed = {}
  for i = 1, #samples do
    pushed[i] = fmt(samples[i])
  end
  later(function()
    redis.call("LPUSH", ring_key, unpack(pushed))
    redis.call("LTRIM", ring_key, 0, RING - 1)
  end)
end

-- 3. Click and cart generations: each id lives in the generation of its own
-- event time; a generation wholly more than a horizon behind the watermark
-- holds only late events, which are never looked up, so it goes.
local horizon = plan.h
local cutoff = wm - horizon
local oldest = math.floor(math.max(cutoff, 0) / horizon)
local gens_key = P .. "dd:gens"
must_be(gens_key, "set")
for _, g in ipairs(redis.call("SMEMBERS", gens_key)) do
  if tonumber(g) < oldest then
    later(function()
      for shard = 0, plan.s - 1 do
        redis.call("UNLINK", P .. "dd:" .. g .. ":" .. shard)
      end
      redis.call("SREM", gens_key, g)
    end)
  end
end

-- 4. Dedupe. The plan's ids come grouped by set, each id once (its first
-- occurrence in the batch) with its owner: the index of its tally or line,
-- counting clicks, carts, orders, cancels in turn (store.py). Clicks and carts:
-- [generation, shard, ids, owners, event times, repeats]; a late one is not
-- looked up, and its repeats in the batch are late too. Orders and cancels:
-- [shard, ids, owners], kept for the campaign's life.
local fresh = {}  -- owner -> its ids Redis had not seen
-- profile -> fresh clicks, fresh carts (owners below #plan.c are click tallies)
local fresh_clicks, fresh_carts = {}, {}
local n_click_tallies = #plan.c
local late = 0
local new_gens = {}
local function dedupe(key, members, owners, profiles)
  if #members == 0 then
    return
  end
  local seen = chunked("SMISMEMBER", key, members)
  local new, n = {}, 0
  for i = 1, #members do
    if seen[i] == 0 then
      n = n + 1
      new[n] = members[i]
      local owner = owners[i]
      fresh[owner] = (fresh[owner] or 0) + 1
      if profiles then
        local p = profiles[i]
        if owner < n_click_tallies then
          fresh_clicks[p] = (fresh_clicks[p] or 0) + 1
        else
          fresh_carts[p] = (fresh_carts[p] or 0) + 1
        end
      end
    end
  end
  if n > 0 then
    later(function() chunked("SADD", key, new) end)
  end
end
for _, group in ipairs(plan.dc) do
  local gen, shard, members, owners, times, reps, profs = group[1], group[2],
    group[3], group[4], group[5], group[6], group[7]
  local is_late = {}
  -- Late ids are rare: a group without one is looked up as it came.
  local m, o, pr = members, owners, profs
  for i = 1, #members do
    if times[i] < cutoff then
      m, o, pr = {}, {}, {}
      break
    end
  end
  if m ~= members then
    for i = 1, #members do
      if times[i] < cutoff then
        is_late[i] = true
        late = late + 1
      else
        local k = #m + 1
        m[k] = members[i]
        o[k] = owners[i]
        pr[k] = profs[i]
      end
    end
  end
  for i = 1, #reps, 2 do
    if is_late[reps[i] + 1] then
      late = late + reps[i + 1]
    end
  end
  if #m > 0 then
    new_gens[fmt(gen)] = true
    dedupe(P .. "dd:" .. fmt(gen) .. ":" .. shard, m, o, pr)
  end
end
for _, group in ipairs(plan.dr) do
  dedupe(P .. "dd:o:" .. group[1], group[2], group[3])
end
local gens = {}
for g in pairs(new_gens) do
  gens[#gens + 1] = g
end
if #gens > 0 then
  later(function() chunked("SADD", gens_key, gens) end)
end

-- 5. Aggregate in Lua tables.
local delta = {}     -- "brand\0channel" -> {brand, channel, counters}
local buyers = {}    -- "brand\0channel" -> list of user ids
local steps = {}     -- brand index -> list of {amount, ts} of new first-hour orders
local new_events = 0

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

-- profile -> the counters its fresh events add to its facets (section 6b)
local prof = {}
local prof_users = {}
local function psums(p)
  local t = prof[p]
  if not t then
    t = {}
    prof[p] = t
  end
  return t
end

local owner = 0
local tallied = 0
for _, spec in ipairs({{plan.c, "clicks"}, {plan.k, "carts"}}) do
  local name = spec[2]
  for _, tally in ipairs(spec[1]) do
    -- {brand, channel, ids}: its new ids are fresh[owner]
    local new = fresh[owner] or 0
    owner = owner + 1
    new_events = new_events + new
    tallied = tallied + tally[3]
    if new > 0 then
      add(counters(tally[1], tally[2]), name, new)
    end
  end
end
local duplicates = tallied - new_events - late
for p, n in pairs(fresh_clicks) do
  psums(p).clicks = n
end
for p, n in pairs(fresh_carts) do
  psums(p).carts = n
end

for _, r in ipairs(plan.r) do
  -- {brand, channel, amount, qty, vip, user, ts, first_hour, profile, at}
  local new = fresh[owner]
  owner = owner + 1
  if new then
    new_events = new_events + 1
    local t, k = counters(r[1], r[2])
    local pt = psums(r[9])
    add(t, "orders", 1)
    add(t, "units", r[4])
    add(t, "gross_gmv_fen", r[3])
    add(t, "net_gmv_fen", r[3])
    add(t, "vip_orders", r[5])
    add(pt, "orders", 1)
    add(pt, "units", r[4])
    add(pt, "gross_gmv_fen", r[3])
    add(pt, "net_gmv_fen", r[3])
    add(pt, "vip_orders", r[5])
    local pu = prof_users[r[9]]
    if not pu then
      pu = {}
      prof_users[r[9]] = pu
    end
    pu[#pu + 1] = r[6]
    local users = buyers[k]
    if not users then
      users = {}
      buyers[k] = users
    end
    users[#users + 1] = r[6]
    if r[8] == 1 then
      add(t, "first_hour_gross_gmv_fen", r[3])
      add(pt, "first_hour_gross_gmv_fen", r[3])
      local s = steps[r[1]]
      if not s then
        s = {}
        steps[r[1]] = s
      end
      s[#s + 1] = {r[3], r[7], r[10]}
    end
  else
    duplicates = duplicates + 1
  end
end

for _, x in ipairs(plan.x) do
  -- {brand, channel, amount, profile}
  local new = fresh[owner]
  owner = owner + 1
  if new then
    new_events = new_events + 1
    local t = counters(x[1], x[2])
    local pt = psums(x[4])
    add(t, "cancels", 1)
    add(t, "net_gmv_fen", -x[3])
    add(pt, "cancels", 1)
    add(pt, "net_gmv_fen", -x[3])
  else
    duplicates = duplicates + 1
  end
end

-- 6. The aggregated deltas: brand x channel, channel; buyers; rank.
-- Only brand x channel is stored per brand: a brand's counters are the sum of
-- its channels and its buyers the union of its channels' buyers keys, read
-- when the report is built (streams/store.py:count_unions). Channel totals are
-- summed here first, so each (channel, counter) is written once per batch.
local brands = plan.b
local channels = plan.n
must_be(P .. "sm:idx", "zset")
must_be(ring_key, "list")

local brand_of_key = {}   -- "<prefix>bc:<brand>" -> brand (section 8)
local per_channel = {}    -- channel -> counters (with carries)
local hll = {}            -- buyers key -> list of user ids
local gross_by_brand = {} -- brand index -> gross delta
for k, d in pairs(delta) do
  local brand = brands[d[1] + 1]
  local ch = channels[d[2] + 1]
  local bckey = P .. "bc:" .. brand
  brand_of_key[bckey] = brand
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
    local bkey = P .. "u:bc:" .. brand .. ":" .. ch
    hll[bkey] = users
    local ckey = P .. "u:ch:" .. ch
    local all = hll[ckey]
    if not all then
      all = {}
      hll[ckey] = all
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
-- 6b. Facets: where the planner says each fresh event also adds
-- (processors/counting.py:Facet): its region, its minute, its channel's first
-- hour. Each profile's sums go to its facets' cells first, so a cell met by
-- many profiles is queued once. A labelled facet names a region: one the
-- campaign holds, or a new one while it holds fewer than the cap
-- (PRESALE_MAX_REGIONS), in the plan's order; past the cap, `other`.
-- Decided here, read before any write.
local cell_sums, cell_users = {}, {}
for p, sums in pairs(prof) do
  local users = prof_users[p]
  for _, f in ipairs(plan.g[p + 1]) do
    local cs = cell_sums[f]
    if not cs then
      cs = {}
      cell_sums[f] = cs
    end
    for name, v in pairs(sums) do
      if string.sub(name, -1) == "^" then
        cs[name] = (cs[name] or 0) + v
      else
        add(cs, name, v)
      end
    end
    if users then
      local cu = cell_users[f]
      if not cu then
        cu = {}
        cell_users[f] = cu
      end
      for i = 1, #users do
        cu[#cu + 1] = users[i]
      end
    end
  end
end
-- A labelled facet's label is a region as the campaign decided it under
-- PRESALE_MAX_REGIONS: its own name once admitted, `other` once refused
-- (plan.lb, as the store knows them). A region not decided yet (plan.lp)
-- counts under its own name in the facet's pending hash (`rgp`), and the
-- aggregate asks the fold to decide it, in the order the batch met it
-- (plan.la): the report then reads its counts under the decision. Only a
-- counted event's region is ever decided, so a duplicate takes no slot.
local resolved, is_pending, pending_at = {}, {}, {}
for i = 1, #plan.lb do
  resolved[i - 1] = plan.lb[i]
  is_pending[i - 1] = plan.lp[i] == 1
  pending_at[i - 1] = plan.la[i]
end
local undecided = {}  -- label index -> true: counted here, decided by the fold
for f, sums in pairs(cell_sums) do
  local facet = plan.gf[f + 1]
  local key, head, label = P .. facet[1], facet[2], ""
  if facet[3] >= 0 then
    label = resolved[facet[3]]
    head = head .. label .. ":"
    if is_pending[facet[3]] then
      key = key .. "p"
      undecided[facet[3]] = true
    end
  end
  local only = nil
  if #facet[4] > 0 then
    only = {}
    for _, name in ipairs(facet[4]) do
      only[name] = true
    end
  end
  for name, lo in pairs(sums) do
    if string.sub(name, -1) ~= "^" and (not only or only[name]) then
      queue_add(key, head .. name, lo, sums[name .. "^"] or 0)
    end
  end
  local users = cell_users[f]
  if users and facet[5] ~= "" then
    local hk = P .. facet[5] .. label
    local list = hll[hk]
    if not list then
      list = {}
      hll[hk] = list
    end
    for i = 1, #users do
      list[#list + 1] = users[i]
    end
  end
end

-- Buyers: a buyers key (u:bc:<brand>:<channel>, u:ch:<channel>,
-- u:rg:<region>) is a set of user ids while it holds at most plan.be
-- (streams/store.py:BUYERS_EXACT) of them, so a small brand's, channel's or
-- region's buyers are exact; the add that takes it past the limit turns it
-- into a HyperLogLog of the same members (a string, 12 KB once dense, within
-- 2% from there on). Its type is read with the other checks, in section 8: a
-- set, a HyperLogLog or nothing; anything else fails the step before any
-- write. Buyers still go first among the writes and stay idempotent: adding
-- members a key holds already changes neither a set nor a HyperLogLog, and
-- the turn depends only on the members, not on the batches that brought
-- them.
local BUYERS_EXACT = plan.be
local buyer_kind = {}  -- buyers key -> "set", "string" (a HyperLogLog), "none"
local function check_buyers()
  for key in pairs(hll) do
    local t = redis.call("TYPE", key)
    t = type(t) == "table" and t.ok or t
    if t == "string" and redis.call("GETRANGE", key, 0, 3) ~= "HYLL" then
      t = "string that is not a HyperLogLog"
    end
    if t ~= "none" and t ~= "set" and t ~= "string" then
      return redis.error_reply("WRONGTYPE " .. key .. " holds a " .. t
        .. ", not buyers (a set or a HyperLogLog): nothing was applied")
    end
    buyer_kind[key] = t
  end
  return nil
end
local function add_buyers()
  for key, users in pairs(hll) do
    if buyer_kind[key] == "string" then
      chunked("PFADD", key, users)
    else
      chunked("SADD", key, users)
      if redis.call("SCARD", key) > BUYERS_EXACT then
        local members = redis.call("SMEMBERS", key)
        redis.call("DEL", key)
        chunked("PFADD", key, members)
      end
    end
  end
end

-- Dead letters, out-of-window and late records.
for reason, n in pairs(plan.dl) do
  queue_add(P .. "dl", reason, n)
end
if plan.ow > 0 then
  queue_add(meta, "out_of_window", plan.ow)
end
if late > 0 then
  queue_add(meta, "late", late)
end

-- Surge traffic per event-time minute: (scope|key) -> records, one hash a
-- minute, and the index of minutes the surge judge walks (streams/alerts.py).
for minute, cells in pairs(plan.m) do
  local mk = P .. "sm:" .. minute
  local fields, counts = cells[1], cells[2]
  for i = 1, #fields do
    queue_add(mk, fields[i], counts[i])
  end
  later(function()
    redis.call("PEXPIRE", mk, plan.mt)
    redis.call("ZADD", P .. "sm:idx", minute, minute)
  end)
end
-- The surge clock, per partition: the lower median of each chunk of
-- plan.ck[1] (64) offsets once the partition is applied past it (a chunk of
-- fewer than plan.ck[2] (8) counted events gives nothing), never back, and never
-- ahead of the wall clock (processors/surge.py:chunk_clock, which the planner
-- applied to the chunks wholly inside the batch: their best is pc[1]). The chunk
-- still open is kept in "clock:part" (JSON [chunk, [ts...]]), so a chunk that
-- spans batches gives what it gives in one batch: the clock is the same
-- whatever the batching. "clock" holds "event_ms:wall_ms", the wall time of
-- the partition's last step, which the judge reads (streams/alerts.py).
local clock_key = P .. "clock"
local part_key = P .. "clock:part"
local chunk_offsets, min_events = plan.ck[1], plan.ck[2]
local function chunk_clock(ts)
  if #ts < min_events then
    return 0
  end
  table.sort(ts)
  return ts[math.floor((#ts - 1) / 2) + 1]
end
for tp, pc in pairs(plan.pc) do
  if tp ~= "" then
    local best, last = pc[1], pc[2]
    local raw = redis.call("HGET", part_key, tp)
    local part = raw and cjson.decode(raw) or nil
    for _, piece in ipairs(pc[3]) do
      if part and part[1] == piece[1] then
        local ts = part[2]
        for i = 1, #piece[2] do
          ts[#ts + 1] = piece[2][i]
        end
      else
        if part then  -- an earlier chunk, passed by this batch: complete
          best = math.max(best, chunk_clock(part[2]))
        end
        part = piece
      end
      if last >= (part[1] + 1) * chunk_offsets - 1 then
        best = math.max(best, chunk_clock(part[2]))
        part = nil
      end
    end
    if part and last >= (part[1] + 1) * chunk_offsets - 1 then
      best = math.max(best, chunk_clock(part[2]))
      part = nil
    end
    local old = redis.call("HGET", clock_key, tp)
    local ts = old and tonumber(string.match(old, "^(%d+)")) or 0
    if best > ts then
      ts = math.max(ts, math.min(best, tonumber(now_ms)))
    end
    local kept = part and cjson.encode(part) or nil
    later(function()
      if kept then
        redis.call("HSET", part_key, tp, kept)
      elseif raw then
        redis.call("HDEL", part_key, tp)
      end
      redis.call("HSET", clock_key, tp, fmt(ts) .. ":" .. now_ms)
    end)
  end
end

-- 8. Read the counter hashes; check the type of every key only written.
local agg_key = P .. "agg"
must_be(agg_key, "stream")
local updates = {}  -- {key, field, value} for HSET; {key, field, delta} exact adds
local known_brand = {}  -- brand -> true: its counters hash here held a field
for key, w in pairs(pending) do
  local fields, los, his = w[1], w[2], w[3]
  local current = chunked("HMGET", key, fields)
  local brand = brand_of_key[key]
  if brand and not known_brand[brand] then
    for k = 1, #fields do
      if current[k] then
        known_brand[brand] = true
        break
      end
    end
  end
  local args, exact = {}, {}
  for k = 1, #fields do
    local v = current[k]
    local old = 0
    if v then
      old = tonumber(v)
    end
    local lo, hi = los[k], his[k]
    local new = old and old + lo
    -- Lua's doubles add exactly below 2^53 (¥90 trillion of fen): a field at or
    -- past that, a delta with a carry, or a value that is not a number takes
    -- HINCRBY, Redis's exact 64-bit add.
    if hi == 0 and new and old > -EXACT and old < EXACT
        and new > -EXACT and new < EXACT then
      args[#args + 1] = fields[k]
      args[#args + 1] = fmt(new)
    else
      exact[#exact + 1] = {fields[k], lo, hi}
    end
  end
  updates[#updates + 1] = {key, args, exact}
end
-- 7. The aggregate lua/fold.lua moves to the campaign's slot: the batch's
-- brands this shard may not have met before (below), its rooms
-- (presale_distinct_ids{kind="rooms"}), each brand's gross GMV added (the
-- rank) and its new first-hour orders {brand, amount, ts, at} (the
-- milestones). Appended to the shard's `agg` stream as entry "<seq>-1".
-- The stream keeps plan.fk entries before plan.ft (the last folded, as the
-- worker saw it), and never fewer than plan.fk before its own last: after
-- Redis lost its last writes, a worker may have seen a fold the shard is now
-- behind.
local seq = 0
local agg_json = ""
do
  local ranked, firsts = {}, {}
  for b, g in pairs(gross_by_brand) do
    ranked[#ranked + 1] = {brands[b + 1], fmt(g)}
  end
  for b, s in pairs(steps) do
    for i = 1, #s do
      -- numbers as text: cjson writes 14 significant digits
      firsts[#firsts + 1] = {brands[b + 1], fmt(s[i][1]), fmt(s[i][2]), fmt(s[i][3])}
    end
  end
  local rooms = plan.rm or {}
  local regions = {}
  for i in pairs(undecided) do
    regions[#regions + 1] = {resolved[i], fmt(pending_at[i])}
  end
  local head = tonumber(redis.call("HGET", meta, "fold_seq") or "0")
  if #brands > 0 or #rooms > 0 then
    seq = head + 1
    -- A brand goes to the fold (the campaign's `brands` set) unless its
    -- counters hash in this shard already held one of the fields this batch
    -- adds to (section 8): the step that first wrote that hash sent it. So a
    -- brand is sent by the first batches that count it in the shard, not by
    -- every batch (a brand sent again is harmless: `brands` is a set).
    local news = {}
    for i = 1, #brands do
      if not known_brand[brands[i]] then
        news[#news + 1] = brands[i]
      end
    end
    local agg = {b = news, r = ranked, f = firsts, m = rooms, p = regions}
    agg_json = cjson.encode(agg)
    later(function()
      redis.call("HSET", meta, "fold_seq", fmt(seq))
      redis.call("XADD", agg_key, fmt(seq) .. "-1", "a", agg_json)
    end)
  end
  local keep_from = math.min(plan.ft, head) - plan.fk + 1
  if keep_from > 1 then
    later(function() redis.call("XTRIM", agg_key, "MINID", fmt(keep_from)) end)
  end
end

do
  local failed = check_buyers()
  if failed then
    return failed
  end
end
for key, kind in pairs(expect) do
  local t = redis.call("TYPE", key)
  t = type(t) == "table" and t.ok or t
  if t ~= "none" and t ~= kind then
    return redis.error_reply("WRONGTYPE " .. key .. " holds a " .. t
      .. ", not a " .. kind .. ": nothing was applied")
  end
end

-- 9. Write: the buyers, the counters (before the minutes' expiry times), the
-- rest, the milestones, then the offsets.
add_buyers()
local FIELDS_CHUNK = 4000
for _, u in ipairs(updates) do
  local key, args, exact = u[1], u[2], u[3]
  for i = 1, #args, FIELDS_CHUNK do
    redis.call("HSET", key, unpack(args, i, math.min(i + FIELDS_CHUNK - 1, #args)))
  end
  for _, e in ipairs(exact) do
    for _, m in ipairs({e[2], e[3] * CARRY}) do
      if m ~= 0 then
        redis.call("HINCRBY", key, e[1], fmt(m))
      end
    end
  end
end
for i = 1, #writes do
  writes[i]()
end
for _, o in ipairs(plan.o) do
  redis.call("HSET", off_key, o[1], fmt(o[3]))
end

return {"ok", new_events, duplicates, late, seq, agg_json}
