-- monitor_bench.lua: CPU cost of the monitor worker at 10 ms sampling while
-- watching 1, 10 and 50 processes, as a percentage of one core.
-- Run: coproc-lua bench/monitor_bench.lua [seconds per case] [interval]
-- Target: under 2% of a core for 10 processes at 10 ms.
local coproc = require "coproc"
local C = coproc.core.monitor

local SECONDS = tonumber(arg and arg[1]) or 5
local INTERVAL = tonumber(arg and arg[2]) or 0.01

-- CPU time of a process in seconds, from /proc/<pid>/schedstat (ns, exact).
local function cpu_seconds(pid)
  local f = assert(io.open("/proc/" .. pid .. "/schedstat"))
  local ns = f:read("n")
  f:close()
  return ns / 1e9
end

local function case(nprocs)
  -- nprocs watched in all: this host plus nprocs - 1 idle children.
  local kids = {}
  for i = 1, nprocs - 1 do kids[i] = assert(C.spawn { "sleep", "600" }) end
  local m <close> = coproc.Monitor { snapshot_seconds = INTERVAL }:start()
  local wpid = m:worker_pid()
  -- Let it settle (first scan, smaps opened), then measure.
  m.messenger:await_available(0.5)
  local s0 = #m:get_stats().t
  local c0, t0 = cpu_seconds(wpid), C.now()
  m.messenger:await_available(SECONDS) -- nothing comes: a plain wait
  local c1, t1 = cpu_seconds(wpid), C.now()
  local stats = m:get_stats()
  local seen = stats.total.nprocs[#stats.t]
  m:stop()
  for _, k in ipairs(kids) do k:kill(9); k:wait() end
  local pct = (c1 - c0) / (t1 - t0) * 100
  local rate = (#stats.t - s0) / (t1 - t0)
  print(("%3d processes (%2d seen)  %6.2f%% of a core  %5.1f samples/s  %6.1f us/sample"):format(
    nprocs, seen, pct, rate, (c1 - c0) / math.max(1, rate * (t1 - t0)) * 1e6))
  return pct
end

print(("monitor CPU cost, interval %g s, %g s per case"):format(INTERVAL, SECONDS))
local r = {}
for _, n in ipairs { 1, 10, 50 } do r[n] = case(n) end
print(("target: < 2%% for 10 processes at 10 ms: %s"):format(r[10] < 2 and "met" or "NOT met"))
