-- bench/core_bench.lua: the measurements of bench/raw_baseline.c, done
-- through the coproc Lua API. Run with coproc-lua (bench/run.sh does).
-- Prints one `name value unit` line per measurement. Not a test.
-- CP_BENCH_SCALE (default 1) scales the iteration counts.
local coproc = require "coproc"

local scale = tonumber(os.getenv("CP_BENCH_SCALE") or "1") or 1
local function n_of(n) return math.max(1, math.floor(n * scale)) end

-- Wall clock: the core's monotonic clock, else `date` (each measurement runs
-- long enough, > 0.3 s, for a process start not to matter).
local now = coproc.now or function()
  local p = assert(io.popen("date +%s%N"))
  local ns = p:read("n")
  p:close()
  return ns / 1e9
end

local function report(name, value, unit, fmt)
  io.write(string.format("%s " .. fmt .. " %s\n", name, value, unit))
  io.flush()
end

-- Echoes every message back as the reply.
local Echo = coproc.class {}
function Echo:run()
  local m = self.messenger
  while true do
    m:send_reply(m:receive_blocking())
  end
end

-- Counts messages; the request "end" is answered with the count so far.
local Sink = coproc.class {}
function Sink:run()
  local m = self.messenger
  local n = 0
  while true do
    if m:receive_blocking() == "end" then
      m:send_reply(n)
      n = 0
    else
      n = n + 1
    end
  end
end

local function rtt_small()
  local w <close> = coproc.WorkerResource(Echo):start()
  local m = w.messenger
  local msg = { id = 0, x = 1.5, name = "abc" }
  local warmup, iters = n_of(2000), n_of(20000)
  local t0
  for i = 1, warmup + iters do
    if i == warmup + 1 then t0 = now() end
    msg.id = i
    m:send_request(msg)
    local r = m:receive_blocking()
    if r.id ~= i then error("echo mismatch at " .. i) end
  end
  report("rtt_small", (now() - t0) / iters * 1e6, "us", "%.2f")
end

-- scalar: stream integers (the smallest message) instead of small tables
local function stream(m, n, scalar)
  local msg = { id = 0, x = 1.5, name = "abc" }
  for i = 1, n do
    if scalar then
      m:send_norequest(i)
    else
      msg.id = i
      m:send_norequest(msg)
    end
  end
  m:send_request("end")
  return m:receive_blocking()
end

local function stream_small(scalar)
  local w <close> = coproc.WorkerResource(Sink):start()
  local m = w.messenger
  stream(m, n_of(10000), scalar) -- warm-up
  local n = n_of(1000000)
  local t0 = now()
  local got = stream(m, n, scalar)
  local dt = now() - t0
  if got ~= n then error(("sink counted %d of %d"):format(got, n)) end
  report(scalar and "stream_int" or "stream_small", n / dt, "msgs/s", "%.0f")
end

-- Round trips of a string of mib MiB through the echo worker, after
-- warm-up ones (the C floor reuses its buffers; this measures coproc once
-- its blocks are paged in too: the first large messages of a process pay
-- for fresh pages, 15-18 us each on some VMs).
local function roundtrip(mib, warmup, iters)
  local w <close> = coproc.WorkerResource(Echo):start()
  local m = w.messenger
  local big = string.rep("b", mib * 1024 * 1024)
  warmup, iters = n_of(warmup), n_of(iters)
  local t0
  for i = 1, warmup + iters do
    if i == warmup + 1 then t0 = now() end
    m:send_request(big)
    local r = m:receive_blocking()
    if #r ~= #big then error(("%d MiB echo came back with %d bytes"):format(mib, #r)) end
  end
  local dt = now() - t0
  report(("roundtrip_%dmib"):format(mib), 2 * #big * iters / dt / 1e9, "GB/s", "%.2f")
end

-- Start to first reply, "fresh" method. Workers stay alive until timing is
-- over, so their shutdown is not counted (raw_baseline does the same).
local function start_first_reply()
  local k = n_of(50)
  local workers = {}
  local t0 = now()
  for i = 1, k do
    local w = coproc.WorkerResource(Echo):start()
    workers[i] = w
    w.messenger:send_request(i)
    if w.messenger:receive_blocking() ~= i then error("bad first reply") end
  end
  local dt = now() - t0
  for _, w in ipairs(workers) do w:terminate() end
  report("start_first_reply", dt / k * 1e6, "us", "%.1f")
end

-- No arguments: every group; else only those named (rtt, stream, big,
-- start), as for raw_baseline.
local function wanted(group)
  if #arg == 0 then return true end
  for _, a in ipairs(arg) do if a == group then return true end end
  return false
end

if wanted("rtt") then rtt_small() end
if wanted("stream") then
  stream_small(false)
  stream_small(true)
end
if wanted("big") then
  roundtrip(1, 5, 200)
  roundtrip(16, 8, 30)
  roundtrip(64, 6, 10)
end
if wanted("start") then start_first_reply() end
