-- Pool tour: map with closures, imap, priorities with submit, errors with the
-- worker's traceback, a worker dying mid-map, LazyPool. Run: coproc-lua examples/pool_example.lua
local coproc = require "coproc"

local pool <close> = coproc.Pool(2, { initializer = function(tag) _G.tag = tag end, initargs = { "w" } })

-- Any closure crosses by value, upvalues included.
local scale = 3
local squares = pool:map(function(x) return x * x * scale end, { 1, 2, 3, 4, 5 })
print("map:", table.concat(squares, " "))

-- A "module.function" name is required in the worker.
print("by name:", table.concat(pool:map("string.upper", { "a", "b" }), " "))

-- imap: ordered, lazy; the index comes first so nil results are fine.
for i, r in pool:imap(function(x) return x % 2 == 0 and x or nil end, { 1, 2, 3, 4 }) do
  print("imap", i, r)
end

-- submit + priorities: lower numbers run sooner; futures give results.
local low = {}
for i = 1, 20 do low[i] = pool:submit(function(n) return n end, { i }, { priority = 10 }) end
local urgent = pool:submit(function() return "urgent: " .. _G.tag end, {}, { priority = 0 })
print(urgent:result())
for i = 1, 20 do assert(low[i]:result() == i) end

-- An error in fn: WorkerError with the worker traceback and the item index.
local ok, err = pcall(pool.map, pool, function(x)
  if x == 3 then error("cannot handle " .. x) end
  return x
end, { 1, 2, 3, 4 })
assert(not ok and coproc.is(err, coproc.WorkerError) and err.index == 3)
print("error at item " .. err.index .. ": " .. err.message)

-- A worker that dies is replaced; with retries its tasks run again.
local marker = os.tmpname()
os.remove(marker)
local r = pool:map(function(x)
  if x == 2 and not io.open(marker) then
    io.open(marker, "w"):close()
    os.exit(1, false)                    -- crash once
  end
  return x * 10
end, { 1, 2, 3 }, { retries = 1, chunksize = 1 })
os.remove(marker)
print("after a crash:", table.concat(r, " "), "deaths:", pool:stats().deaths)

-- LazyPool: forks per map; fn and items are inherited, not sent.
local out = io.stdout                     -- userdata, cannot be sent
local lp = coproc.LazyPool(2)
local kinds = lp:map(function(x) return io.type(out) .. x end, { 1, 2 })
print("lazy:", table.concat(kinds, " "))
