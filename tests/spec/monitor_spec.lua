-- monitor_spec.lua: coproc.Monitor / coproc.monitor (lua/coproc/monitor.lua).
local coproc = require "coproc"
local monitor = require "coproc.monitor"
local C = coproc.core.monitor

local MiB = 1024 * 1024
local tmpdir = os.tmpname()
os.remove(tmpdir)
os.execute("mkdir -p " .. tmpdir)
local function tmp(name) return tmpdir .. "/" .. name end

local function read_file(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Poll until pred() is true; a generous hang guard, not a timing assertion.
local function wait_for(pred, what, timeout)
  local deadline = C.now() + (timeout or 30)
  while not pred() do
    if C.now() > deadline then error("timed out waiting for " .. what, 2) end
  end
end

-- A worker that holds n bytes on request (string.rep touches every byte).
-- Compiled against the real globals: busted runs specs in its own _ENV.
local hog = assert(load([[
  local m = ...
  local keep
  while true do
    local n = m:receive_blocking()
    keep = nil
    collectgarbage()
    keep = string.rep("x", n)
    m:send_reply(#keep)
  end
]], "=hog", "t", package.loaded._G))

-- assert.same with NaN equal to NaN (unknown PSS/USS are NaN).
local function same_nums(a, b)
  assert.equal(#a, #b)
  for i = 1, #a do
    if a[i] == a[i] or b[i] == b[i] then assert.equal(a[i], b[i]) end
  end
end

local function proc_of(stats, pid)
  for _, p in ipairs(stats.procs) do if p.pid == pid then return p end end
end

describe("coproc.Monitor", function()
  it("is reachable as coproc.Monitor and constructs without starting", function()
    assert.equal(monitor, coproc.Monitor)
    local m = coproc.Monitor { snapshot_seconds = 0.05 }
    assert.is_false(m:is_alive())
    assert.equal(C.getpid(), m.opts.pid)
  end)

  it("sees the memory growth of a child that allocates, and notes carry memory", function()
    local w <close> = coproc.WorkerResource(hog):start()
    local m <close> = coproc.Monitor { snapshot_seconds = 0.01 }:start()
    m:update_child_processes()
    w.messenger:send_request(1000)
    assert.equal(1000, w.messenger:receive_blocking(nil, 30))
    m:add_note("before", nil, { do_print = false })
    w.messenger:send_request(64 * MiB)
    assert.equal(64 * MiB, w.messenger:receive_blocking(nil, 30))
    m:add_note("after", "64 MiB held", { do_print = false })
    local stats
    wait_for(function()
      stats = m:get_stats()
      local p = proc_of(stats, w:pid())
      return p and p.rss[#p.rss] >= 64 * MiB
    end, "the child's RSS to reach 64 MiB")
    -- The monitor never watches itself; host and child are both there.
    assert.is_nil(proc_of(stats, m:worker_pid()))
    assert.truthy(proc_of(stats, C.getpid()))
    local p = proc_of(stats, w:pid())
    -- growth, not an absolute size (under valgrind a fresh process is large)
    assert.truthy(p.rss[#p.rss] - p.rss[1] >= 48 * MiB)
    assert.equal("before", stats.notes[1].note)
    assert.equal("after", stats.notes[2].note)
    assert.equal("64 MiB held", stats.notes[2].details)
    assert.truthy(stats.notes[2].rss >= stats.notes[1].rss + 60 * MiB)
    assert.truthy(stats.notes[2].t >= stats.notes[1].t)
    -- Totals are the sum over processes at each time.
    local i = #stats.t
    local sum = 0
    for _, q in ipairs(stats.procs) do
      local k = i - q.i0 + 1
      if k >= 1 and k <= #q.rss then sum = sum + q.rss[k] end
    end
    assert.equal(stats.total.rss[i], sum)
    -- USS of our own processes is readable (smaps_rollup).
    assert.truthy(stats.notes[2].uss >= 60 * MiB)
    assert.truthy(p.vms[#p.vms] >= p.rss[#p.rss])
  end)

  it("handles a watched child that exits, and sees new ones", function()
    local m <close> = coproc.Monitor { snapshot_seconds = 0.01 }:start()
    local w = coproc.WorkerResource(hog):start()
    local pid = w:pid()
    -- Found without update_child_processes (periodic rescan).
    wait_for(function() return proc_of(m:get_stats(), pid) ~= nil end, "the new child to be seen")
    w:terminate()
    local n_at_exit = #m:get_stats().t
    wait_for(function() return #m:get_stats().t > n_at_exit + 5 end, "samples after the exit")
    local stats = m:get_stats()
    local p = proc_of(stats, pid)
    -- Its series ended; the monitor kept sampling the rest.
    assert.truthy(p.i0 + #p.rss - 1 < #stats.t)
    assert.equal(1, stats.total.nprocs[#stats.t])
    assert.is_true(m:is_alive())
  end)

  it("watches a given pid, and stops when asked", function()
    local w <close> = coproc.WorkerResource(hog):start()
    local m = coproc.Monitor { pid = w:pid(), snapshot_seconds = 0.01, include_children = false }:start()
    wait_for(function() return #m:get_stats().t >= 3 end, "3 samples")
    local stats = m:get_stats()
    assert.equal(w:pid(), stats.pid)
    assert.equal(1, #stats.procs)
    assert.equal(w:pid(), stats.procs[1].pid)
    local wp = m:worker_pid()
    m:stop()
    assert.is_false(m:is_alive())
    assert.is_false(C.exists(wp))
    m:stop() -- twice is fine
    assert.has_error(function() m:get_stats() end, "coproc.Monitor: not running (call start())")
  end)

  it("writes notes to log_path as readable lines as they come", function()
    local log = tmp("notes.log")
    local m <close> = coproc.Monitor { snapshot_seconds = 0.02, log_path = log }:start()
    m:add_note("phase one", "details here", { do_print = false })
    m:log("only logged")
    m:label("only labelled")
    local notes = m:get_stats().notes -- a round trip: the notes before it are handled
    assert.same({ true, false, true }, { notes[1].label, notes[2].label, notes[3].label })
    local text = read_file(log)
    assert.truthy(text:find("monitor started: pid " .. C.getpid(), 1, true))
    assert.truthy(text:find("| phase one: details here", 1, true))
    assert.truthy(text:find("| only logged", 1, true))
    assert.falsy(text:find("only labelled", 1, true))
    assert.truthy(text:match("%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.%d%d%d  %+%d+%.%d+s  RSS [%d.]+ %a+"))
    m:stop()
    assert.truthy(read_file(log):find("monitor stopped after %d+ samples"))
  end)

  it("round-trips stats through CSV and JSON", function()
    local m <close> = coproc.Monitor { snapshot_seconds = 0.01 }:start()
    local w <close> = coproc.WorkerResource(hog):start()
    m:update_child_processes()
    wait_for(function() return #m:get_stats().t >= 5 end, "5 samples")
    m:add_note('a "quoted", note', "with, commas", { do_print = false })
    local s = m:get_stats()
    s:to_csv(tmp("s.csv"), { notes_path = tmp("notes.csv") })
    s:to_json(tmp("s.json"))
    local header = read_file(tmp("s.csv")):match("^[^\n]*")
    assert.equal("time_s,pid,name,rss,vms,pss,uss,cpu_percent", header)
    assert.truthy(read_file(tmp("notes.csv")):find('"a ""quoted"", note","with, commas"', 1, true))

    local j = monitor.Stats.from_json(tmp("s.json"))
    assert.same(s.t, j.t)
    assert.same(s.total.rss, j.total.rss)
    assert.same(s.notes[1].note, j.notes[1].note)
    assert.equal(#s.procs, #j.procs)
    for k, p in ipairs(s.procs) do
      assert.equal(p.pid, j.procs[k].pid)
      assert.same(p.rss, j.procs[k].rss)
      assert.same(p.cpu, j.procs[k].cpu)
      same_nums(p.pss, j.procs[k].pss)
    end
    assert.equal(tostring(s), tostring(j))

    local c = monitor.Stats.from_csv(tmp("s.csv"))
    assert.same(s.t, c.t)
    for _, f in ipairs { "rss", "vms", "cpu" } do assert.same(s.total[f], c.total[f]) end
    assert.same(s.total.nprocs, c.total.nprocs)
    for k, p in ipairs(s.procs) do
      assert.equal(p.pid, c.procs[k].pid)
      assert.equal(p.i0, c.procs[k].i0)
      same_nums(p.uss, c.procs[k].uss)
    end
  end)

  it("draws PNG and SVG plots, and redraws fig_path while running", function()
    local fig = tmp("live.png")
    local m <close> = coproc.Monitor { snapshot_seconds = 0.01, fig_path = fig, save_fig_freq = 5,
      fig_min_seconds = 0 }:start()
    m:add_note("a label", nil, { do_print = false })
    wait_for(function() local s = read_file(fig); return s and #s > 1000 end, "the live plot")
    m:save_memory_plot(tmp("host.svg"), { font_size = 8 })
    local stats = m:get_stats()
    m:stop()
    local png = read_file(fig)
    assert.equal("\137PNG\r\n\26\n", png:sub(1, 8))
    assert.truthy(#png > 10000 and #png < 5 * MiB)
    -- PNG width and height from the IHDR chunk.
    local w, h = string.unpack(">I4I4", png, 17)
    assert.equal(1200, w)
    assert.equal(720, h)
    local svg = read_file(tmp("host.svg"))
    assert.truthy(svg:find("<svg", 1, true))
    assert.truthy(#svg > 5000 and #svg < 20 * MiB)
    stats:save_memory_plot(tmp("stats.png"), { include_notes = false, metric = "uss", width = 800, height = 500 })
    assert.equal(800, (string.unpack(">I4", read_file(tmp("stats.png")), 17)))
    assert.has_error(function() stats:save_memory_plot(tmp("x.pdf")) end)
    assert.has_error(function() stats:save_memory_plot("/nonexistent-dir/x.png") end)
  end)

  describe("rejects bad options with clear errors", function()
    local function err_of(f)
      local ok, e = pcall(f)
      assert.is_false(ok)
      return tostring(e)
    end
    it("negative or zero interval", function()
      assert.truthy(err_of(function() coproc.Monitor { snapshot_seconds = -1 } end)
        :find("snapshot_seconds must be a positive number", 1, true))
      assert.truthy(err_of(function() coproc.Monitor { snapshot_seconds = 0 } end):find("snapshot_seconds", 1, true))
      assert.truthy(err_of(function() coproc.Monitor { snapshot_seconds = "fast" } end):find("snapshot_seconds", 1, true))
    end)
    it("unwritable log or figure path", function()
      assert.truthy(err_of(function() coproc.Monitor { log_path = "/nonexistent-dir/m.log" } end)
        :find("cannot write log_path '/nonexistent-dir/m.log'", 1, true))
      assert.truthy(err_of(function() coproc.Monitor { fig_path = "/nonexistent-dir/m.png" } end)
        :find("cannot write fig_path", 1, true))
      assert.truthy(err_of(function() coproc.Monitor { fig_path = tmp("m.jpg") } end)
        :find("fig_path must end in .png or .svg", 1, true))
      -- The check leaves no empty file behind.
      coproc.Monitor { fig_path = tmp("fresh.png") }
      assert.is_nil(read_file(tmp("fresh.png")))
    end)
    it("a pid that does not exist", function()
      assert.truthy(err_of(function() coproc.Monitor { pid = 1 << 23 } end)
        :find("no process with pid " .. (1 << 23), 1, true))
      assert.truthy(err_of(function() coproc.Monitor { pid = -5 } end):find("pid must be a positive integer", 1, true))
    end)
    it("a pid that exits before start", function()
      local w = coproc.WorkerResource(hog):start()
      local m = coproc.Monitor { pid = w:pid() }
      w:terminate()
      assert.truthy(err_of(function() m:start() end):find("no process with pid " .. w:pid(), 1, true))
      assert.is_false(m:is_alive())
    end)
    it("unknown options and bad save_fig_freq", function()
      assert.truthy(err_of(function() coproc.Monitor { snapshot_second = 1 } end):find("unknown option 'snapshot_second'", 1, true))
      assert.truthy(err_of(function() coproc.Monitor { save_fig_freq = 0 } end):find("save_fig_freq", 1, true))
    end)
  end)
end)

describe("coproc-lua -m coproc.monitor", function()
  local exe = os.getenv("COPROC_LUA")
  local function run(args)
    local ok, how, code = os.execute(exe .. " -m coproc.monitor " .. args .. " 2>" .. tmp("cli.err"))
    return code, read_file(tmp("cli.err"))
  end

  it("runs a command, exits with its status, writes CSV, JSON and plot", function()
    local csv, png, js = tmp("cli.csv"), tmp("cli.png"), tmp("cli.json")
    local code, err = run(("--interval 0.01 --csv %s --plot %s --json %s -- lua5.4 -e '%s'"):format(csv, png, js,
      "local t = {} for i = 1, 2e6 do t[i] = i end os.exit(3)"))
    assert.equal(3, code)
    assert.truthy(err:find("exited with 3", 1, true))
    local s = monitor.Stats.from_csv(csv)
    assert.truthy(#s.t >= 2)
    assert.truthy(s:peak("rss") > 16 * MiB) -- 2e6 integers in a table
    assert.equal("lua5.4", s.procs[1].name)
    assert.equal("\137PNG", read_file(png):sub(1, 4))
    assert.equal(s.procs[1].pid, monitor.Stats.from_json(js).pid)
  end)

  it("watches the command's children and reports a signal as 128 + n", function()
    local csv = tmp("tree.csv")
    local code = run(("-q --interval 0.01 --csv %s -- sh -c 'sleep 1 & sleep 1 & wait; kill -TERM $$'"):format(csv))
    assert.equal(128 + 15, code)
    local s = monitor.Stats.from_csv(csv)
    local names = {}
    for _, p in ipairs(s.procs) do names[p.name] = (names[p.name] or 0) + 1 end
    assert.equal(2, names.sleep)
  end)

  it("fails clearly on a missing command or bad options", function()
    local code, err = run("-- /nonexistent/no-such-program")
    assert.equal(127, code)
    assert.truthy(err:find("cannot run '/nonexistent/no-such-program'", 1, true))
    code, err = run("--interval -1 -- true")
    assert.equal(2, code)
    assert.truthy(err:find("snapshot_seconds must be a positive number", 1, true))
    code, err = run("")
    assert.equal(2, code)
    assert.truthy(err:find("no command given", 1, true))
    code, err = run("--plot /nonexistent-dir/p.png -- true")
    assert.equal(2, code)
  end)
end)
