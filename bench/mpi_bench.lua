-- coproc.mpi benchmark (not a test), side by side in one job:
--   mpirun --oversubscribe -n 3 build/coproc-lua -m coproc.mpi bench/mpi_bench.lua [N]
-- (bench/mpi_run.sh runs it over shared memory and over TCP and prints the
-- targets). Rank 0 measures, ranks 1 and 2 serve:
-- 1. round trip of a small message over the MPI transport (a messenger to a
--    WorkerResource on rank 1 that echoes), next to a plain C MPI ping-pong
--    between the same two ranks (MPI_Send/MPI_Recv, mpi_core.raw_pingpong);
-- 2. pool:map of a trivial function over N (1e6) items on the 2 serving
--    ranks, next to a local coproc.Pool(2) of rank 0;
-- 3. streaming small messages, and a 1 MiB round trip;
-- 4. rank 0's CPU time while it waits 2 s for a slow task.
-- Prints `name value unit` lines; CP_BENCH_SCALE scales the counts.
local coproc = require "coproc"
local mpi_core = require "coproc.mpi_core"

local scale = tonumber(os.getenv("CP_BENCH_SCALE") or "1") or 1
local function n_of(n) return math.max(1, math.floor(n * scale)) end
local N = tonumber(arg and arg[1]) or n_of(1000000)
local now = coproc.now

local function report(name, value, unit, fmt)
  io.write(string.format("%s " .. fmt .. " %s\n", name, value, unit))
  io.flush()
end

local function best_of(runs, f)
  local best = math.huge
  for _ = 1, runs do
    local t0 = now()
    f()
    local dt = now() - t0
    if dt < best then best = dt end
  end
  return best
end

---------------------------------------------------------------- 1. round trip

local Echo = coproc.class {}
function Echo:run()
  local m = self.messenger
  while true do
    local msg = m:receive_blocking()
    if type(msg) == "table" and msg.raw then
      -- the plain C ping-pong, on a tag of its own, then back to echoing
      require("coproc.mpi_core").raw_pingpong(0, msg.iters, msg.bytes, msg.tag, false)
      m:send_reply("raw done")
    else
      m:send_reply(msg)
    end
  end
end

do
  local w <close> = coproc.mpi.WorkerResource(Echo):start()
  local m = w.messenger
  local msg = { id = 0, x = 1.5, name = "abc" }
  local bytes = #coproc.encode(msg) + 8   -- the frame: prefix and header
  local warmup, iters = n_of(2000), n_of(20000)
  local best = math.huge
  for _ = 1, 3 do
    local t0
    for i = 1, warmup + iters do
      if i == warmup + 1 then t0 = now() end
      msg.id = i
      m:send_request(msg)
      local r = m:receive_blocking()
      if r.id ~= i then error("echo mismatch at " .. i) end
    end
    best = math.min(best, (now() - t0) / iters)
  end
  report("rtt_small", best * 1e6, "us", "%.2f")

  local raw = math.huge
  for _ = 1, 3 do
    m:send_request({ raw = true, iters = warmup + iters, bytes = bytes, tag = 1 << 30 })
    m:flush()   -- (a corked request would wait for our next coproc call)
    local per = mpi_core.raw_pingpong(w:rank(), warmup + iters, bytes, 1 << 30, true)
    assert(m:receive_blocking() == "raw done")
    raw = math.min(raw, per)
  end
  report("raw_mpi_rtt", raw * 1e6, "us", "%.2f")

  ---------------------------------------------------------------- 3. streaming
  local Sink = coproc.class {}
  function Sink:run()
    local sm, n = self.messenger, 0
    while true do
      if sm:receive_blocking() == "end" then sm:send_reply(n); n = 0 else n = n + 1 end
    end
  end
  local s <close> = coproc.mpi.WorkerResource(Sink):start()
  local sm = s.messenger
  local function stream(count)
    for i = 1, count do sm:send_norequest(i) end
    sm:send_request("end")
    local got = sm:receive_blocking()
    assert(got == count, "sink counted " .. tostring(got))
  end
  stream(n_of(100000))   -- warm-up (both heaps grow once)
  local count = n_of(1000000)
  report("stream_int", count / best_of(3, function() stream(count) end), "msgs/s", "%.0f")

  local big = string.rep("b", 1 << 20)
  local reps = n_of(100)
  for _ = 1, 5 do m:send_request(big); m:receive_blocking() end
  local dt = best_of(3, function()
    for _ = 1, reps do
      m:send_request(big)
      assert(#m:receive_blocking() == #big)
    end
  end)
  report("roundtrip_1mib", 2 * #big * reps / dt / 1e9, "GB/s", "%.2f")
end

---------------------------------------------------------------- 2. pool:map

local items = {}
for i = 1, N do items[i] = i end
local function inc(x) return x + 1 end

local function map_rate(pool)
  pool:map(inc, items)          -- warm the cost estimate
  local dt = best_of(3, function()
    local r = pool:map(inc, items)
    assert(r[N] == N + 1)
  end)
  return N / dt
end

do
  local local_pool <close> = coproc.Pool(2)
  report("map_local_pool2", map_rate(local_pool), "items/s", "%.0f")
end
do
  local mpi_pool <close> = coproc.mpi.Pool(2)
  report("map_mpi_2ranks", map_rate(mpi_pool), "items/s", "%.0f")
end

---------------------------------------------------------------- 4. idle wait

do
  local pool <close> = coproc.mpi.Pool(1)
  local f = pool:submit(function()
    local core = require "coproc.core"
    local t = core.now() + 2
    while core.now() < t do end
    return true
  end)
  local c0, t0 = os.clock(), now()
  assert(f:result(30))
  local cpu, wall = os.clock() - c0, now() - t0
  report("idle_wait_cpu", cpu * 1e3, ("ms_over_%.1f_s"):format(wall), "%.1f")
end
