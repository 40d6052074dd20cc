-- monitor_bench.lua: what the monitor costs.
--  * CPU of the monitor worker at 10 ms sampling while watching 1, 10, 50
--    and 200 processes, as a percentage of one core, with the default
--    honest PSS total and with smaps_rollup never read (the RSS-only floor,
--    where this version has it): the difference is what PSS costs.
--  * A worker's start (fresh, to its first reply) and its memory: plotting
--    is its own module, so workers do not map PLplot.
-- Run: coproc-lua bench/monitor_bench.lua [seconds per case] [interval]
-- Target: under 2% of a core for 10 processes at 10 ms.
local coproc = require "coproc"
local C = coproc.core.monitor

local SECONDS = tonumber(arg and arg[1]) or 5
local INTERVAL = tonumber(arg and arg[2]) or 0.01
local now = coproc.now

-- CPU time of a process in seconds, from /proc/<pid>/schedstat (ns, exact).
local function cpu_seconds(pid)
  local f = assert(io.open("/proc/" .. pid .. "/schedstat"))
  local ns = f:read("n")
  f:close()
  return ns / 1e9
end

local function spawn_sleep()
  local c = C.spawn { "sleep", "600" } -- older versions return nil, message
  return assert(c)
end

-- The honest-PSS part exists from this version on (smaps_seconds = 0 means
-- "never" here, "every sample" before).
local HAVE_PSS_TOTAL = coproc.MonitorError ~= nil

local function case(nprocs, extra)
  -- nprocs watched in all: this host plus nprocs - 1 idle children.
  local kids = {}
  for i = 1, nprocs - 1 do kids[i] = spawn_sleep() end
  local opts = { snapshot_seconds = INTERVAL }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local m <close> = coproc.Monitor(opts):start()
  local wpid = m:worker_pid()
  -- Let it settle (first scan, smaps opened), then measure.
  m.messenger:await_available(0.5)
  local s0 = #m:get_stats().t
  local r0 = HAVE_PSS_TOTAL and m:smaps_reads() or 0
  local c0, t0 = cpu_seconds(wpid), now()
  m.messenger:await_available(SECONDS) -- nothing comes: a plain wait
  local c1, t1 = cpu_seconds(wpid), now()
  local stats = m:get_stats()
  local reads = HAVE_PSS_TOTAL and (m:smaps_reads() - r0) or 0
  local seen = stats.total.nprocs[#stats.t]
  m:stop()
  for _, k in ipairs(kids) do k:kill(9); k:wait() end
  local pct = (c1 - c0) / (t1 - t0) * 100
  local rate = (#stats.t - s0) / (t1 - t0)
  return pct, seen, rate, (c1 - c0) / math.max(1, rate * (t1 - t0)) * 1e6, reads / (t1 - t0)
end

-- Worker start and memory, first: a fresh host, as small as it gets.
local function status_kib(pid, key)
  for line in io.lines("/proc/" .. pid .. "/status") do
    local v = line:match("^" .. key .. ":%s+(%d+)")
    if v then return tonumber(v) end
  end
end
local function smaps_kib(pid, key)
  local f = io.open("/proc/" .. pid .. "/smaps_rollup")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match(key .. ":%s+(%d+)")) or 0
end
local function mapped(pid, what)
  local f = io.open("/proc/" .. pid .. "/maps")
  local s = f:read("a")
  f:close()
  local n = 0
  for _ in s:gmatch("\n") do n = n + 1 end
  return n, s:find(what, 1, true) ~= nil
end

local N = 40
local Echo = function(m) while true do m:send_reply(m:receive_blocking()) end end
local starts, rss, pss, maps, plplot = {}, 0, 0, 0, false
for i = 1, N do
  local t0 = now()
  local w <close> = coproc.WorkerResource(Echo):start()
  w.messenger:send_request(1)
  w.messenger:receive_blocking(nil, 10)
  starts[i] = (now() - t0) * 1e3
  if i == N then
    rss, pss = status_kib(w:pid(), "VmRSS"), smaps_kib(w:pid(), "Pss")
    maps, plplot = mapped(w:pid(), "plplot")
  end
end
table.sort(starts)
print(("worker start (fresh, to first reply): median %.2f ms, best %.2f ms over %d; "
  .. "worker RSS %d KiB, PSS %d KiB, %d mappings, PLplot mapped: %s"):format(
  starts[N // 2], starts[1], N, rss, pss, maps, tostring(plplot)))

print(("monitor CPU cost, interval %g s, %g s per case"):format(INTERVAL, SECONDS))
local r = {}
for _, n in ipairs { 1, 10, 50, 200 } do
  local pct, seen, rate, us, reads = case(n)
  r[n] = pct
  local line = ("%3d processes (%3d seen)  %6.2f%% of a core  %5.1f samples/s  %6.1f us/sample"):format(
    n, seen, pct, rate, us)
  if HAVE_PSS_TOTAL then
    local floor = case(n, { smaps_seconds = 0 })
    line = line .. ("  | RSS only %5.2f%%: PSS costs %5.2f%% (%.0f smaps reads/s)"):format(floor, pct - floor, reads)
  end
  print(line)
end
print(("target: < 2%% for 10 processes at 10 ms: %s"):format(r[10] < 2 and "met" or "NOT met"))

