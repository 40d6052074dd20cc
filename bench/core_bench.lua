-- bench/core_bench.lua: the measurements of bench/raw_baseline.c, done
-- through the coproc Lua API. Run with coproc-lua (bench/run.sh does).
-- Prints one `name value unit` line per measurement. Not a test.
-- CP_BENCH_SCALE (default 1) scales the iteration counts; CP_BENCH_ONLY
-- (a comma list of the names below, e.g. "stream_small,stream_int,floor")
-- runs only those.
local coproc = require "coproc"
local core = require "coproc.core"

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

-- Counts messages; the request "end" is answered with the count so far and
-- the CPU time (os.clock) spent since the first of them.
local Sink = coproc.class {}
function Sink:run()
  local m = self.messenger
  local n, c0 = 0, nil
  while true do
    if m:receive_blocking() == "end" then
      m:send_reply { n, os.clock() - (c0 or os.clock()) }
      n, c0 = 0, nil
    else
      if n == 0 then c0 = os.clock() end
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
  local r = m:receive_blocking()
  return r[1], r[2]
end

local function stream_small(scalar)
  local w <close> = coproc.WorkerResource(Sink):start()
  local m = w.messenger
  stream(m, n_of(10000), scalar) -- warm-up
  local n = n_of(1000000)
  local t0, c0 = now(), os.clock()
  local got, sink_cpu = stream(m, n, scalar)
  local dt, cpu = now() - t0, os.clock() - c0
  if got ~= n then error(("sink counted %d of %d"):format(got, n)) end
  local name = scalar and "stream_int" or "stream_small"
  report(name, n / dt, "msgs/s", "%.0f")
  -- CPU per message on each side, and the rate if each had a core of its
  -- own (on a shared VM the wall-clock rate also says how busy it was)
  report(name .. "_sender_cpu", cpu / n * 1e9, "ns/msg", "%.0f")
  report(name .. "_receiver_cpu", sink_cpu / n * 1e9, "ns/msg", "%.0f")
  report(name .. "_cpu_bound", n / math.max(cpu, sink_cpu), "msgs/s", "%.0f")
end

-- The in-process floor of a stream: the same messages encoded and decoded
-- by the same codec in one process, in batches (an array of 1000 encoded as
-- one value, then decoded), so no transport and no per-call cost. A stream
-- runs the two on two processes at once, so the floor is the slower of the
-- two: n / max(encode time, decode time).
local function floor_one(scalar)
  local B, rounds = 1000, n_of(1000)
  local batch = {}
  for i = 1, B do batch[i] = scalar and i or { id = i, x = 1.5, name = "abc" } end
  local enc, dec = core.encode, core.decode
  local s = enc(batch)
  dec(s) -- warm-up
  local t0 = now()
  for _ = 1, rounds do enc(batch) end
  local te = now() - t0
  t0 = now()
  for _ = 1, rounds do dec(s) end
  local td = now() - t0
  local name = scalar and "floor_int" or "floor_small"
  report(name .. "_encode", B * rounds / te, "msgs/s", "%.0f")
  report(name .. "_decode", B * rounds / td, "msgs/s", "%.0f")
  report(name, B * rounds / math.max(te, td), "msgs/s", "%.0f")
end

local function floor()
  floor_one(false)
  floor_one(true)
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

-- No arguments: every group; else only those named (rtt, stream, floor,
-- big, start), as for raw_baseline. CP_BENCH_ONLY (a comma list of
-- measurement names) picks single measurements instead.
local only = os.getenv("CP_BENCH_ONLY")
local function wanted(group, name)
  if only then return (',' .. only .. ','):find(',' .. name .. ',', 1, true) ~= nil end
  if #arg == 0 then return true end
  for _, a in ipairs(arg) do if a == group then return true end end
  return false
end

if wanted("rtt", "rtt_small") then rtt_small() end
if wanted("stream", "stream_small") then stream_small(false) end
if wanted("stream", "stream_int") then stream_small(true) end
if wanted("floor", "floor") then floor() end
if wanted("big", "roundtrip_1mib") then roundtrip(1, 5, 200) end
if wanted("big", "roundtrip_16mib") then roundtrip(16, 8, 30) end
if wanted("big", "roundtrip_64mib") then roundtrip(64, 6, 10) end
if wanted("start", "start_first_reply") then start_first_reply() end
