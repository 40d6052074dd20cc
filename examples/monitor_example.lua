-- monitor_example.lua: the README's Monitor example, as written there (the
-- seed's, in Lua): a pool of workers, then a growing list emptied every
-- million items, with notes; the plot goes to tmp/test_parallel.png, the
-- notes to tmp/test_parallel.log.
local coproc = require "coproc"

os.execute("mkdir -p tmp")
local function work(n)                                  -- each task holds n numbers for a while
  local t = {}
  for i = 1, n do t[i] = i end
  return #t
end

local monitor = coproc.Monitor { snapshot_seconds = 0.01,
  fig_path = "tmp/test_parallel.png", log_path = "tmp/test_parallel.log" }

local stats
do
  local m <close> = monitor:start()
  m:add_note("starting workers")
  do
    local pool <close> = coproc.Pool(4)
    m:update_child_processes()
    pool:map(work, { 1e5, 2e5, 3e5, 4e5 })
  end
  m:add_note("finished workers")
  local l = {}
  for i = 1, 3e6 do
    l[#l + 1] = i
    if i % 1e6 == 0 then m:add_note("emptying list", #l .. " numbers dropped", { do_print = false }); l = {} end
  end
  stats = m:get_stats()
end
stats:save_memory_plot("tmp/test_parallel.png", { font_size = 8 })
