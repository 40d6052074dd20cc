-- bench/pool_host.lua: the pool's host loop and memory (bench/pool.sh runs
-- it with the C floor bench/pool_floor.c and prints the ratios). Not a
-- test. Run with coproc-lua from the source dir:
--
--   coproc-lua bench/pool_host.lua rate [n]     (default 1e6)
--       pool_map: Pool(2):map(x + 1) over n integers, automatic chunking,
--       best of 5 after a warm-up; lua_fill: the same loop in this process
--       (results[i] = f(items[i]) into a presized table), the Lua floor.
--   coproc-lua bench/pool_host.lua memory [n]   (default 1e7)
--       pool_peak_rss: this process's peak RSS (VmHWM) after
--       Pool(2):map(x + 1) over n integers.
--   coproc-lua bench/pool_host.lua arrays [n]
--       arrays_rss: the RSS of this process holding the two arrays alone
--       (the items and a table of n results), the memory floor.
--
-- Prints `name value unit` lines.
local coproc = require "coproc"

local mode = arg and arg[1] or "rate"
local n = math.tointeger(tonumber(arg and arg[2]) or (mode == "rate" and 1e6 or 1e7))
local now = coproc.now
local table_new = coproc.core.table_new

local function report(name, value, unit, fmt)
  io.write(string.format("%s " .. fmt .. " %s\n", name, value, unit))
  io.flush()
end

local function status_kib(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+) kB"))
end

local function inc(x) return x + 1 end

local items = table_new(n, 0)
for i = 1, n do items[i] = i end

if mode == "rate" then
  local pool = coproc.Pool(2)
  pool:map(inc, items)                -- workers up, cost estimate learnt
  local best = math.huge
  for _ = 1, 5 do
    local t0 = now()
    local r = pool:map(inc, items)
    local dt = now() - t0
    assert(r[n] == n + 1 and r[1] == 2)
    if dt < best then best = dt end
  end
  pool:terminate()
  report("pool_map", n / best, "items/s", "%.0f")
  best = math.huge
  for _ = 1, 5 do
    local t0 = now()
    local r = table_new(n, 0)
    for i = 1, n do r[i] = inc(items[i]) end
    local dt = now() - t0
    assert(r[n] == n + 1)
    if dt < best then best = dt end
  end
  report("lua_fill", n / best, "items/s", "%.0f")
elseif mode == "memory" then
  local pool = coproc.Pool(2)
  local r = pool:map(inc, items)
  assert(r[n] == n + 1)
  pool:terminate()
  report("pool_peak_rss", status_kib("VmHWM") / 1024, "MiB", "%.1f")
elseif mode == "arrays" then
  local r = table_new(n, 0)
  for i = 1, n do r[i] = inc(items[i]) end
  report("arrays_rss", status_kib("VmRSS") / 1024, "MiB", "%.1f")
else
  error("unknown mode " .. tostring(mode) .. " (rate, memory or arrays)")
end
