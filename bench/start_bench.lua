-- bench/start_bench.lua: fresh worker start to first reply, the coproc side
-- of bench/start_floor.c (bench/start.sh runs both and prints the ratios).
-- Not a test. Run with coproc-lua from the source dir:
--
--   coproc-lua bench/start_bench.lua [small|big|bigfirst] [n_one] [n_many]
--
--   small     start_one: n_one workers one at a time (start, one round trip;
--             they stay alive until the timing is over), start_one_named:
--             the same with a class whose code names coproc, and start_many:
--             n_many workers started at once, then their first replies;
--   big       start_one_big: as start_one, in a host grown to 300 MiB RSS
--             while two workers run (so the fork server, made when a second
--             fresh worker starts, was forked from the small host);
--   bigfirst  start_one_bigfirst: the same, grown before its first worker.
--
-- Prints `name value unit` lines (and the host's RSS as host_rss_mib); with
-- start_one, start_pss: the workers' mean PSS (KiB) once all n_one run, as
-- bench/start_floor.c's floor_pss.
local coproc = require "coproc"

local mode = arg and arg[1] or "small"
local n_one = tonumber(arg and arg[2]) or 50
local n_many = tonumber(arg and arg[3]) or 256
local now = coproc.now

local function report(name, value, unit, fmt)
  io.write(string.format("%s " .. fmt .. " %s\n", name, value, unit))
  io.flush()
end

local Echo = coproc.class {}
function Echo:run()
  local m = self.messenger
  while true do m:send_reply(m:receive_blocking()) end
end

-- The same, written as users often write it: its code names coproc (an
-- upvalue the worker must resolve), here to report a fault nobody raises.
local Named = coproc.class {}
function Named:run()
  local m = self.messenger
  while true do
    local msg = m:receive_blocking()
    if msg == nil then error(coproc.Error("no message")) end
    m:send_reply(msg)
  end
end

local function rss_mib()
  local f = assert(io.open("/proc/self/statm"))
  local _, rss = f:read("n", "n")
  f:close()
  return rss * 4096 / 2 ^ 20
end

local function start(i, class)
  local w = coproc.WorkerResource(class or Echo):start()
  w.messenger:send_request(i)
  return w
end

local function first_reply(w, i)
  if w.messenger:receive_blocking(nil, 60) ~= i then error("bad first reply") end
end

local function stop(ws)
  for _, w in ipairs(ws) do w:close(0) end
end

-- Grow the host's heap to about mib MiB RSS with many small tables (the
-- shape of a real host's data, not one big block).
local ballast = {}
local function grow(mib)
  local k = #ballast
  while rss_mib() < mib do
    for _ = 1, 4096 do
      k = k + 1
      local t = {}
      for j = 1, 56 do t[j] = j end
      ballast[k] = t
    end
  end
  collectgarbage()
end

-- Before timing: a full collection, then a few starts that are not timed.
-- After the heap grew, the first allocations of the host (any, not only a
-- start's) pay for the (generational) collector catching up with the new
-- heap: tens of ms at 300 MiB. That is the host's own cost.
local function settle()
  collectgarbage()
  local ws = {}
  for i = 1, 4 do
    ws[i] = start(i)
    first_reply(ws[i], i)
  end
  stop(ws)
end

-- The Pss of pid in KiB.
local function pss_kib(pid)
  local f = assert(io.open("/proc/" .. pid .. "/smaps_rollup"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("\nPss:%s+(%d+)"))
end

-- k workers (of class, default Echo), one at a time; seconds per worker,
-- and their mean PSS.
local function one_at_a_time(k, class)
  local ws = {}
  local t0 = now()
  for i = 1, k do
    ws[i] = start(i, class)
    first_reply(ws[i], i)
  end
  local dt = now() - t0
  local pss = 0
  for i = 1, k do pss = pss + pss_kib(ws[i]:pid()) end
  stop(ws)
  return dt / k, pss / k
end

local function at_once(k)
  local ws = {}
  local t0 = now()
  for i = 1, k do ws[i] = start(i) end
  for i = 1, k do first_reply(ws[i], i) end
  local dt = now() - t0
  stop(ws)
  return dt / k
end

if mode == "small" then
  settle()
  local dt, pss = one_at_a_time(n_one)
  report("start_one", dt * 1e6, "us", "%.1f")
  report("start_pss", pss, "KiB", "%.1f")
  report("start_one_named", one_at_a_time(n_one, Named) * 1e6, "us", "%.1f")
  report("start_many", at_once(n_many) * 1e6, "us", "%.1f")
  report("host_rss_mib", rss_mib(), "MiB", "%.0f")
elseif mode == "big" then
  local keep = { start(0), start(0) }
  first_reply(keep[1], 0)
  first_reply(keep[2], 0)
  grow(300)
  settle()
  report("start_one_big", one_at_a_time(n_one) * 1e6, "us", "%.1f")
  report("host_rss_mib", rss_mib(), "MiB", "%.0f")
  stop(keep)
elseif mode == "bigfirst" then
  grow(300)
  settle()
  report("start_one_bigfirst", one_at_a_time(n_one) * 1e6, "us", "%.1f")
  report("host_rss_mib", rss_mib(), "MiB", "%.0f")
else
  error("unknown mode " .. tostring(mode) .. " (small, big or bigfirst)")
end
