-- bench/submit_bench.lua: submit + result with every future kept (a user
-- probe found each submit getting slower as futures piled up). Not a test.
-- Run with coproc-lua from the source dir:
--
--   coproc-lua bench/submit_bench.lua [n...] [incremental]
--
-- For each n (default 10000 and 100000), on a fresh Pool(2): n submits of
-- x + 1 with all the futures kept in a list, then result() of each.
-- "inline" submits a new closure each time (function(x) ... end written in
-- the loop), "shared" one function value. Prints `name value unit` lines:
--   submit_<case>_<n>_wall   seconds for the submits and results
--   submit_<case>_<n>_cpu    host CPU seconds of the same (os.clock)
--   submit_<case>_<n>_per    microseconds per future (wall)
--   future_kib_<n>           live host memory per kept, finished future
-- "incremental" switches the collector to incremental mode first (what a
-- plain lua host that requires coproc runs; coproc-lua runs generational).
-- Linear means the per-future time stays flat as n grows.
local coproc = require "coproc"

local now = coproc.now
local ns, mode = {}, nil
for _, a in ipairs(arg or {}) do
  if tonumber(a) then ns[#ns + 1] = math.tointeger(tonumber(a)) else mode = a end
end
if #ns == 0 then ns = { 10000, 100000 } end
if mode == "incremental" then collectgarbage("incremental") end

local function report(name, value, unit, fmt)
  io.write(string.format("%s " .. fmt .. " %s\n", name, value, unit))
  io.flush()
end

local function inc(x) return x + 1 end

local function run(pool, n, inline)
  local fs = {}
  collectgarbage()
  local base = collectgarbage("count")
  local t0, c0 = now(), os.clock()
  if inline then
    for i = 1, n do fs[i] = pool:submit(function(x) return x + 1 end, { i }) end
  else
    for i = 1, n do fs[i] = pool:submit(inc, { i }) end
  end
  for i = 1, n do assert(fs[i]:result() == i + 1) end
  local wall, cpu = now() - t0, os.clock() - c0
  collectgarbage()
  local kib = (collectgarbage("count") - base) / n
  return wall, cpu, kib, fs
end

for _, n in ipairs(ns) do
  for _, case in ipairs { { "inline", true }, { "shared", false } } do
    local pool <close> = coproc.Pool(2)
    pool:map(inc, { 1, 2, 3, 4 })   -- workers up
    local wall, cpu, kib = run(pool, n, case[2])
    report(("submit_%s_%d_wall"):format(case[1], n), wall, "s", "%.3f")
    report(("submit_%s_%d_cpu"):format(case[1], n), cpu, "s", "%.3f")
    report(("submit_%s_%d_per"):format(case[1], n), wall / n * 1e6, "us", "%.1f")
    if case[2] then report(("future_kib_%d"):format(n), kib, "KiB", "%.2f") end
  end
end
