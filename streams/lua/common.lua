-- What every script of the store uses; streams/store.py puts it before each.

local function fmt(n)
  return string.format("%.0f", n)
end

-- unpack() is bounded by Lua's C stack (about 8,000 values): long argument
-- lists go in chunks. `extra`, when given, goes before each chunk's members.
local CHUNK = 4000
local function chunked(cmd, key, list, extra)
  local out = {}
  for i = 1, #list, CHUNK do
    local j = math.min(i + CHUNK - 1, #list)
    local part
    if extra then
      part = redis.call(cmd, key, extra, unpack(list, i, j))
    else
      part = redis.call(cmd, key, unpack(list, i, j))
    end
    if type(part) == "table" then
      for k = 1, #part do
        out[#out + 1] = part[k]
      end
    end
  end
  return out
end

