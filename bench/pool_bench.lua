-- Pool benchmark (not a test): run from the source dir with
--   build/coproc-lua bench/pool_bench.lua [N]
-- 1. Pool(2):map of a trivial function over N (100,000) integers at
--    chunksize 1 and with automatic chunking, next to Python's
--    multiprocessing.Pool(2).map at chunksize 1 and its default chunksize
--    (bench/pool_baseline.py; skipped with a notice without python3);
-- 2. a CPU-bound map (tasks of ~5 ms): efficiency against the ideal 2x;
-- 3. worker replacement latency: from a worker's last instant before it
--    dies to the first result from its replacement.
local coproc = require "coproc"

local N = tonumber(arg and arg[1]) or 100000
local now = coproc.now

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

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

local items = {}
for i = 1, N do items[i] = i end
local function inc(x) return x + 1 end

local function loadavg()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("l") or "?"
  if f then f:close() end
  return s:match("^(%S+)") or s
end
-- Timings need idle cores: the load average is printed so a busy machine shows.
print(("coproc Pool benchmark: %d cpus, N = %d, load average %s"):format(coproc.cpu_count(), N, loadavg()))

---------------------------------------------------------------- 1. throughput
local t0 = now()
local pool = coproc.Pool(2)
pool:map(inc, { 1, 2, 3, 4 })    -- workers up
local t_start = now() - t0
print(("pool start (2 workers, first map round trip): %.1f ms"):format(t_start * 1e3))

local rates = {}
for _, case in ipairs { { "chunksize 1", 1 }, { "auto chunking", nil } } do
  local name, cs = case[1], case[2]
  pool:map(inc, items, { chunksize = cs })        -- warm the cost estimate
  local dt = best_of(5, function()
    local r = pool:map(inc, items, { chunksize = cs })
    assert(r[N] == N + 1)
  end)
  rates[name] = N / dt
  print(("coproc Pool(2):map  %-14s %12.0f tasks/s  (%.1f ms)"):format(name, N / dt, dt * 1e3))
end

local py = io.popen("command -v python3 >/dev/null 2>&1 && python3 bench/pool_baseline.py " .. N
  .. " 2>/dev/null")
local line = py and py:read("l")
if py then py:close() end
local py1, pyd = line and tonumber(line:match('"chunksize1": ([%d.e+]+)')),
  line and tonumber(line:match('"default": ([%d.e+]+)'))
if py1 and pyd then
  print(("python Pool(2).map  %-14s %12.0f tasks/s"):format("chunksize 1", py1))
  print(("python Pool(2).map  %-14s %12.0f tasks/s"):format("default", pyd))
  print(("ratio coproc/python: chunksize 1 %.1fx, auto vs python default %.2fx, "
    .. "coproc chunksize 1 vs python default %.2fx"):format(
    rates["chunksize 1"] / py1, rates["auto chunking"] / pyd, rates["chunksize 1"] / pyd))
else
  print("python baseline skipped: python3 not found (or bench/pool_baseline.py failed;"
    .. " run from the source dir)")
end

---------------------------------------------------------------- 2. CPU-bound
local function burn(n)
  local s = 0
  for i = 1, n do s = s + i % 7 end
  return s
end
-- calibrate ~5 ms per task
local iters = 10000
while true do
  local dt = best_of(3, function() burn(iters) end)
  if dt >= 0.005 then iters = math.floor(iters * 0.005 / dt); break end
  iters = iters * 2
end
local ntasks = 200
local work = {}
for i = 1, ntasks do work[i] = iters end
local serial = best_of(2, function() for i = 1, ntasks do burn(work[i]) end end)
pool:map(burn, { iters, iters })
local par = best_of(3, function() pool:map(burn, work) end)
local par1 = best_of(3, function() pool:map(burn, work, { chunksize = 1 }) end)
print(("cpu-bound: %d tasks of %.1f ms, serial %.3f s; Pool(2) auto %.3f s -> speedup %.2fx, "
  .. "efficiency %.1f%%; chunksize 1 %.3f s -> %.1f%%"):format(ntasks, serial / ntasks * 1e3, serial,
  par, serial / par, 100 * serial / (2 * par), par1, 100 * serial / (2 * par1)))
pool:terminate()

---------------------------------------------------------------- 3. replacement
local one = coproc.Pool(1)
one:apply(inc, 1)
local stamp = os.tmpname()
local lat, detect = {}, {}
for k = 1, 30 do
  local f = one:submit(function(path)
    local fh = io.open(path, "w")
    fh:write(string.format("%.9f", require("coproc.core").now()))
    fh:close()
    os.exit(1, false)
  end, { stamp })
  local ok, err = pcall(f.result, f, 10)
  assert(not ok and coproc.is(err, coproc.WorkerDied), tostring(err))
  local t_noticed = now()
  assert(one:apply(inc, k) == k + 1)           -- answered by the replacement
  local t_ready = now()
  local fh = io.open(stamp)
  local t_last = tonumber(fh:read("a"))
  fh:close()
  lat[k] = t_ready - t_last
  detect[k] = t_noticed - t_last
end
os.remove(stamp)
local mlat, mdet = median(lat), median(detect)
table.sort(lat)
print(("worker replacement: death noticed after %.2f ms (median), replacement answering %.2f ms "
  .. "after the death (median; max %.2f ms) over %d kills"):format(mdet * 1e3, mlat * 1e3,
  lat[#lat] * 1e3, #lat))
one:terminate()
print("load average at the end: " .. loadavg())
