-- monitor_example.lua: the seed README's Monitor example, in Lua.
-- A pool of workers, then a growing table emptied every K steps, with notes
-- at each step; the memory plot goes to tmp/test_parallel.png and the notes
-- to tmp/test_parallel.log. Sizes are shrunk from the seed (1e8 items) so it
-- runs in a second or two.
local coproc = require "coproc"

os.execute("mkdir -p tmp")

-- Each task builds a table of n numbers, so the workers' memory shows.
local function test_thread(n)
  local t = {}
  for i = 1, n do t[i] = i * 2 end
  local s = 0
  for i = 1, n do s = s + t[i] end
  return s
end

local N, K = 6e6, 2e6 -- the seed: 1e8 items, emptied every 3e7

local monitor = coproc.Monitor {
  snapshot_seconds = 0.01,
  fig_path = "tmp/test_parallel.png",
  log_path = "tmp/test_parallel.log",
}

local stats
do
  local m <close> = monitor:start()
  -- The seed sleeps 0.1 s here: let a few samples come in first.
  while #m:get_stats().t < 10 do end
  m:add_note("starting workers")
  do
    local p <close> = coproc.Pool(4)
    m:update_child_processes()
    local sums = p:map(test_thread, { 1e6, 2e6, 3e6, 4e6 })
    assert(sums[4] == 4e6 * (4e6 + 1))
  end
  m:add_note("finished workers")

  local l = {}
  for i = 0, N - 1 do
    l[#l + 1] = i
    if i > 0 and i % K == 0 then
      m:add_note("emptying list", "dumping all memory", { do_print = false })
      l = {}
    end
  end
  stats = m:get_stats()
end
stats:save_memory_plot("tmp/test_parallel.png", { font_size = 8 })
print(stats)
assert(#stats.notes == 2 + (N - 1) // K)
assert(#stats.procs >= 5, "the pool's workers were not seen")
