-- monitor_spec.lua: coproc.Monitor / coproc.monitor (lua/coproc/monitor.lua).
local describe, it, assert = describe, it, assert
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"
local monitor = require "coproc.monitor"
local C = coproc.core.monitor
local now, getpid = coproc.now, coproc.getpid

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
  local deadline = now() + (timeout or 30)
  while not pred() do
    if now() > deadline then error("timed out waiting for " .. what, 2) end
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
    assert.equal(getpid(), m.opts.pid)
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
    assert.truthy(proc_of(stats, getpid()))
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

  it("still answers when sampling takes longer than its interval", function()
    local t0 = coproc.now()
    local m = coproc.Monitor { snapshot_seconds = 1e-6 }
    m:start()
    m:add_note("behind")
    local st = m:get_stats()
    m:stop()
    assert.is_true(#st.t >= 1)
    assert.is_true(coproc.now() - t0 < 10, "took " .. (coproc.now() - t0) .. " s")
  end)

  it("says its worker is stopped (SIGSTOP) instead of waiting, and stop() still ends it", function()
    local t0 = coproc.now()
    local m = coproc.Monitor {}
    m:start()
    local pid = m:worker_pid()
    os.execute("kill -STOP " .. pid)
    local ok, err = pcall(m.get_stats, m)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.MonitorError), tostring(err))
    assert.matches("is stopped", tostring(err), 1, true)
    ok = pcall(m.stop, m)
    assert.is_false(ok)
    assert.is_true(coproc.now() - t0 < 10, "took " .. (coproc.now() - t0) .. " s")
    assert.is_false(os.execute("kill -0 " .. pid .. " 2>/dev/null") == true)
  end)

  it("says its worker died (SIGKILL) as a MonitorError, for requests, notes and stop()", function()
    local m = coproc.Monitor {}
    m:start()
    local pid = m:worker_pid()
    os.execute("kill -KILL " .. pid)
    local ok, err = pcall(m.get_stats, m)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.MonitorError), tostring(err))
    assert.matches("(pid " .. pid .. ") died", tostring(err), 1, true)
    assert.is_true(coproc.is(err.cause), tostring(err.cause))
    ok, err = pcall(m.add_note, m, "after it died")
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.MonitorError), tostring(err))
    ok, err = pcall(m.stop, m)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.MonitorError), tostring(err))
    assert.is_false(m:is_alive())
    assert.is_true(pcall(m.stop, m))                 -- stopped: a second stop does nothing
  end)

  it("refuses, readably, to be used from a forked child; the host's monitor goes on", function()
    local m <close> = coproc.Monitor {}:start()
    _G.monitor_spec_m = m
    local w <close> = coproc.WorkerResource(function(msgr)
      local ok, err = pcall(_G.monitor_spec_m.add_note, _G.monitor_spec_m, "from the child")
      msgr:send_reply({ ok = ok, monitor_error = coproc.is(err, coproc.MonitorError), msg = tostring(err) })
      msgr:receive_blocking()
    end, { method = "inherit" }):start()
    local r = w.messenger:receive_blocking(nil, 30)
    _G.monitor_spec_m = nil
    assert.is_false(r.ok)
    assert.is_true(r.monitor_error, r.msg)
    assert.matches("belongs to pid " .. getpid(), r.msg, 1, true)
    m:add_note("in the host")
    local notes = m:get_stats().notes
    assert.equal(1, #notes)
    assert.equal("in the host", notes[1].note)
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
    local ok, e = pcall(m.get_stats, m)
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.MonitorError))
    assert.equal("coproc.Monitor: not running (call start())", e.message)
  end)

  it("writes notes to log_path as readable lines as they come", function()
    local log = tmp("notes.log")
    local m <close> = coproc.Monitor { snapshot_seconds = 0.02, log_path = log }:start()
    m:add_note("phase one", "details here", { do_print = false })
    m:log("only logged")
    m:label("only labelled")
    m:log("two\nlines", "and\r\nmore")
    local notes = m:get_stats().notes -- a round trip: the notes before it are handled
    assert.same({ true, false, true }, { notes[1].label, notes[2].label, notes[3].label })
    assert.equal("two\nlines", notes[4].note)         -- the note itself is kept as given
    local text = read_file(log)
    -- one line per note: a line break in a note is written as \n
    assert.truthy(text:find("| two\\nlines: and\\r\\nmore\n", 1, true))
    local lines = 0
    for _ in text:gmatch("\n") do lines = lines + 1 end
    assert.equal(4, lines)                              -- started + 3 logged notes
    assert.truthy(text:find("monitor started: pid " .. getpid(), 1, true))
    assert.truthy(text:find("| phase one: details here", 1, true))
    assert.truthy(text:find("| only logged", 1, true))
    assert.falsy(text:find("only labelled", 1, true))
    assert.truthy(text:match("%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.%d%d%d  %+%d+%.%d+s  RSS [%d.]+ %a+"))
    m:stop()
    assert.truthy(read_file(log):find("monitor stopped after %d+ samples"))
  end)

  it("round-trips stats through CSV and JSON", function()
    local m <close> = coproc.Monitor { snapshot_seconds = 0.01 }:start()
    local _ <close> = coproc.WorkerResource(hog):start()
    m:update_child_processes()
    wait_for(function() return #m:get_stats().t >= 5 end, "5 samples")
    m:add_note('a "quoted", note', "with, commas", { do_print = false })
    local s = m:get_stats()
    s:to_csv(tmp("s.csv"), { notes_path = tmp("notes.csv") })
    s:to_json(tmp("s.json"))
    local header = read_file(tmp("s.csv")):match("^[^\n]*")
    assert.equal("time_s,pid,name,rss,vms,pss,uss,cpu_percent,memory,memory_metric", header)
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
    assert.has_error(function() stats:save_memory_plot(tmp("x.pdf")) end,
      "bad argument #1 to 'save_memory_plot' (a .png or .svg path expected, got '" .. tmp("x.pdf") .. "')")
    local ok, e = pcall(stats.save_memory_plot, stats, "/nonexistent-dir/x.png")
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.OSError))
    assert.equal("/nonexistent-dir/x.png", e.path)
    assert.equal(2, e.errno) -- ENOENT
    assert.truthy(e.message:find("cannot write plot file '/nonexistent-dir/x.png'", 1, true))
  end)

  it("refuses plot sizes it cannot draw, readably, before any file is made", function()
    local m <close> = coproc.Monitor { snapshot_seconds = 0.01 }:start()
    m:add_note("n", nil, { do_print = false })
    local stats = m:get_stats()
    local path = tmp("size.png")
    os.remove(path)
    local px = "to 'save_memory_plot' (an integer number of pixels 100..20000 expected, got "
    for _, case in ipairs {
      { { width = 99 }, "bad option 'width' " .. px .. "99)" },
      { { height = 1e30 }, "bad option 'height' " .. px .. "1e+30)" },
      { { width = 640.5 }, "bad option 'width' " .. px .. "640.5)" },
      { { font_size = 0 }, "bad option 'font_size' to 'save_memory_plot' (a number of points 1..200 expected, got 0)" },
      { { width = "wide" }, "bad option 'width' " .. px .. "string)" },
    } do
      local ok, err = pcall(stats.save_memory_plot, stats, path, case[1])
      assert.is_false(ok)
      assert.truthy(tostring(err):find(case[2], 1, true), tostring(err))
    end
    -- In range, but no room for the text: a MonitorError saying so (PLplot
    -- would print its own error and leave a broken image).
    local ok, err = pcall(stats.save_memory_plot, stats, path, { width = 100, height = 100 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.MonitorError), tostring(err))
    assert.truthy(tostring(err):find("a 100x100 plot is too small for its text at 11 pt", 1, true), tostring(err))
    assert.is_nil(read_file(path))
    -- The smallest sizes that fit are drawn.
    stats:save_memory_plot(path, { width = 150, height = 120 })
    assert.equal(150, (string.unpack(">I4", read_file(path), 17)))
  end)

  it("keeps PSS right across exec (within 10% of a direct smaps_rollup read)", function()
    -- sh execs a Lua that holds 96 MiB: a kept-open smaps_rollup would stay
    -- bound to the shell's address space (PSS ~1 MiB, USS 0).
    local marker = tmp("exec.marker")
    os.remove(marker)
    local prog = ("local s = string.rep('x', 96 << 20); local f = io.open(%q, 'w'); f:write(#s); f:close(); " ..
      "while io.open(%q) do os.execute('sleep 0.05 </dev/null >/dev/null 2>&1') end"):format(marker, marker)
    local cmd <close> = C.spawn { "sh", "-c", "read x < /dev/null; exec lua5.4 -e \"$0\"", prog }
    -- PSS re-read at every sample (by default each process's every 0.5 s,
    -- and the last read could predate the fill).
    local m <close> = coproc.Monitor { pid = cmd:pid(), snapshot_seconds = 0.01, smaps_seconds = 0.01,
      include_children = false }:start()
    wait_for(function() return read_file(marker) ~= nil end, "the exec'd program to fill its memory")
    local n0 = #m:get_stats().t
    wait_for(function() return #m:get_stats().t >= n0 + 3 end, "3 samples after the exec")
    local stats = m:get_stats()
    local p = stats.procs[1]
    assert.equal("lua5.4", p.name)
    local direct = assert(C.read(cmd:pid(), true))
    local pss = p.pss[#p.pss]
    assert.truthy(direct.pss >= 96 * MiB)
    assert.truthy(math.abs(pss - direct.pss) <= direct.pss * 0.10,
      ("monitor PSS %d vs smaps_rollup %d"):format(pss, direct.pss))
    assert.truthy(p.uss[#p.uss] >= 90 * MiB)
    os.remove(marker) -- the program ends
  end)

  it("counts a forked tree honestly by default (within 15% of the sum of PSS)", function()
    -- Workers forked from a host holding 96 MiB share those pages: a sum
    -- of RSS counts them three times.
    local big = string.rep("y", 96 << 20)
    local _ <close> = coproc.WorkerResource(hog):start()
    local _ <close> = coproc.WorkerResource(hog):start()
    local m <close> = coproc.Monitor { snapshot_seconds = 0.01 }:start()
    assert.equal("pss", m.opts.metric)
    local n0 = #m:get_stats().t
    wait_for(function() return #m:get_stats().t >= n0 + 5 end, "5 samples")
    m:add_note("now", nil, { do_print = false }) -- a sample with every smaps_rollup read at once
    local stats = m:get_stats()
    local i = #stats.t
    local direct, rss = 0, 0
    for _, p in ipairs(stats.procs) do
      local k = i - p.i0 + 1
      if k >= 1 and k <= #p.rss then
        local r = assert(C.read(p.pid, true))
        direct = direct + r.pss
        rss = rss + p.rss[k]
      end
    end
    local total = stats.total.mem[i]
    assert.truthy(#stats.procs >= 3)
    assert.truthy(math.abs(total - direct) <= direct * 0.15, ("total %d vs sum of PSS %d"):format(total, direct))
    assert.truthy(rss > total + 96 * MiB) -- what the old RSS total would have said
    assert.equal(0, stats.total.mem_rss[i])
    assert.equal(total, stats.notes[1].mem)
    assert.truthy(#big > 0)
  end)

  it("lays the plot out inside the image: legend, note labels apart and off the total, a CPU panel", function()
    local m <close> = coproc.Monitor { snapshot_seconds = 0.01 }:start()
    local ws = {}
    for k = 1, 5 do ws[k] = coproc.WorkerResource(hog):start() end
    m:update_child_processes()
    m:add_note("start", nil, { do_print = false })
    for k = 1, 5 do ws[k].messenger:send_request(k * 4 * MiB); ws[k].messenger:receive_blocking(nil, 30) end
    m:add_note("middle: every worker holds memory", nil, { do_print = false })
    wait_for(function() return #m:get_stats().t >= 20 end, "20 samples")
    m:add_note("end", nil, { do_print = false })
    local stats = m:get_stats()
    for k = 1, 5 do ws[k]:terminate() end
    local L = stats:plot_layout()
    local function inside(a, b) return a.x0 >= b.x0 and a.y0 >= b.y0 and a.x1 <= b.x1 and a.y1 <= b.y1 end
    local function meet(a, b) return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1 end
    local image = { x0 = 0, y0 = 0, x1 = L.width, y1 = L.height }
    assert.equal(1200, L.width)
    assert.truthy(inside(L.memory, image) and inside(L.legend, image))
    assert.truthy(L.cpu and inside(L.cpu, image) and L.cpu.y0 > L.memory.y1)
    assert.equal(#stats.procs + 1, L.legend.entries) -- total + 6 processes, none left out
    assert.equal(3, #L.labels)
    local tot = stats.total.mem
    for i, a in ipairs(L.labels) do
      assert.is_true(a.placed)
      assert.truthy(inside(a, L.memory))
      if L.legend.where ~= "below" then assert.is_false(meet(a, L.legend)) end
      for j = 1, i - 1 do assert.is_false(meet(a, L.labels[j])) end
      for k = 1, #stats.t do -- every sample of the total, in pixels
        local x = L.memory.x0 + stats.t[k] / L.time.max * (L.memory.x1 - L.memory.x0)
        local y = L.memory.y1 - tot[k] / L.memory.max * (L.memory.y1 - L.memory.y0)
        assert.is_false(x > a.x0 and x < a.x1 and y > a.y0 and y < a.y1)
      end
    end
    assert.is_nil(stats:plot_layout { include_cpu = false }.cpu)
    local _, drawn = stats:save_memory_plot(tmp("layout.png"))
    assert.same(L.labels[2], drawn.labels[2])
  end)

  it("writes and reads files with errors that name them", function()
    local s = monitor.Stats.new(1, 0.1)
    local ok, e = pcall(s.to_csv, s, "/nonexistent-dir/s.csv")
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.OSError))
    assert.same({ "/nonexistent-dir/s.csv", "open", 2 }, { e.path, e.call, e.errno })
    assert.equal("cannot write CSV file '/nonexistent-dir/s.csv': /nonexistent-dir/s.csv: No such file or directory", e.message)
    ok, e = pcall(s.to_json, s, "/nonexistent-dir/s.json")
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.OSError))
    ok, e = pcall(monitor.Stats.from_csv, tmp("missing.csv"))
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.OSError))
    local f = io.open(tmp("not.csv"), "w"); f:write("a,b\n"); f:close()
    ok, e = pcall(monitor.Stats.from_csv, tmp("not.csv"))
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.MonitorError))
    assert.equal(tmp("not.csv"), e.path)
    -- core.monitor raises coproc errors too
    ok, e = pcall(C.proctrack, 1 << 23, false)
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.OSError))
    assert.same({ 3, "proctrack" }, { e.errno, e.call }) -- ESRCH
    ok, e = pcall(C.spawn, { "/nonexistent/prog" })
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.OSError))
    assert.equal("cannot run '/nonexistent/prog': No such file or directory", e.message)
  end)

  it("gives its C types one shape: close twice, closed use, __tostring", function()
    local t = C.proctrack(getpid(), false)
    assert.truthy(tostring(t):find("^coproc.ProcTrack %(root %d+, 1 processes%)"))
    t:close(); t:close()
    assert.equal("coproc.ProcTrack (closed)", tostring(t))
    assert.has_error(function() t:pids() end, "attempt to use a closed coproc.ProcTrack")
    local c = C.spawn { "sleep", "30" }
    assert.truthy(tostring(c):find("running", 1, true))
    local pid = c:pid()
    c:close(); c:close() -- kills and reaps the running command
    assert.is_false(C.exists(pid))
    assert.has_error(function() c:wait() end, "attempt to use a closed coproc.Command")
    assert.equal(getmetatable(c).__gc, getmetatable(c).__close)
    local plot = require "coproc.plot"
    local p = plot.new { series = { { x = { 0, 1 }, mem = { 1, 2 }, total = true } } }
    assert.equal("coproc.Plot (1 lines, 0 notes)", tostring(p))
    p:close(); p:close()
    assert.has_error(function() p:layout() end, "attempt to use a closed coproc.Plot")
    assert.has_error(function() getmetatable(p).__index.layout({}) end)
  end)

  it("keeps PLplot out of hosts and workers until they plot", function()
    -- In a fresh host: busted's own process has plotted already.
    local out = io.popen((os.getenv("COPROC_LUA") or "coproc-lua") .. [[ -e "
      local coproc = require 'coproc'
      local function mapped(pid) return io.open('/proc/' .. pid .. '/maps'):read('a'):find('plplot') ~= nil end
      local w <close> = coproc.WorkerResource(function(m) m:receive_blocking() end):start()
      local m <close> = coproc.Monitor { snapshot_seconds = 0.05 }:start()
      print(mapped(coproc.getpid()), mapped(w:pid()))
      m:get_stats():save_memory_plot(os.tmpname() .. '.png')
      print(mapped(coproc.getpid()))"]]):read("a")
    assert.equal("false\tfalse\ntrue\n", out)
  end)

  describe("rejects bad options with clear errors", function()
    local function err_of(f)
      local ok, e = pcall(f)
      assert.is_false(ok)
      return tostring(e)
    end
    it("negative or zero interval", function()
      assert.truthy(err_of(function() coproc.Monitor { snapshot_seconds = -1 } end)
        :find("bad option 'snapshot_seconds' to 'Monitor' (a positive number of seconds expected, got -1)", 1, true))
      assert.truthy(err_of(function() coproc.Monitor { snapshot_seconds = 0 } end):find("snapshot_seconds", 1, true))
      assert.truthy(err_of(function() coproc.Monitor { snapshot_seconds = "fast" } end):find("snapshot_seconds", 1, true))
    end)
    it("unwritable log or figure path", function()
      assert.truthy(err_of(function() coproc.Monitor { log_path = "/nonexistent-dir/m.log" } end)
        :find("OSError: coproc.Monitor: cannot write log_path '/nonexistent-dir/m.log'", 1, true))
      assert.truthy(err_of(function() coproc.Monitor { fig_path = "/nonexistent-dir/m.png" } end)
        :find("cannot write fig_path", 1, true))
      assert.truthy(err_of(function() coproc.Monitor { fig_path = tmp("m.jpg") } end)
:find("bad option 'fig_path' to 'Monitor' (a .png or .svg path expected", 1, true))
      -- The check leaves no empty file behind.
      coproc.Monitor { fig_path = tmp("fresh.png") }
      assert.is_nil(read_file(tmp("fresh.png")))
    end)
    it("a pid that does not exist", function()
      assert.truthy(err_of(function() coproc.Monitor { pid = 1 << 23 } end)
        :find("MonitorError: coproc.Monitor: no process with pid " .. (1 << 23), 1, true))
      assert.truthy(err_of(function() coproc.Monitor { pid = -5 } end)
        :find("bad option 'pid' to 'Monitor' (a positive integer expected", 1, true))
    end)
    it("a pid that exits before start", function()
      local w = coproc.WorkerResource(hog):start()
      local m = coproc.Monitor { pid = w:pid() }
      w:terminate()
      local ok, e = pcall(m.start, m)
      assert.is_false(ok)
      assert.is_true(coproc.is(e, coproc.MonitorError))
      assert.equal(w:pid(), e.pid)
      assert.truthy(e.message:find("no process with pid " .. w:pid(), 1, true))
      assert.is_false(m:is_alive())
    end)
    it("unknown options and bad save_fig_freq", function()
      assert.truthy(err_of(function() coproc.Monitor { snapshot_second = 1 } end)
        :find("bad option 'snapshot_second' to 'Monitor' (did you mean 'snapshot_seconds'?)", 1, true))
      assert.truthy(err_of(function() coproc.Monitor { save_fig_freq = 0 } end):find("save_fig_freq", 1, true))
    end)
  end)
end)

describe("coproc-lua -m coproc.monitor", function()
  local exe = os.getenv("COPROC_LUA") or "coproc-lua"
  local function run(args)
    local _, how, code = os.execute(exe .. " -m coproc.monitor " .. args .. " 2>" .. tmp("cli.err"))
    assert(how == "exit", "coproc-lua -m coproc.monitor was killed by signal " .. tostring(code))
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

  it("says so when a command ended before any sample saw its memory (not 'peak 0 B')", function()
    local code, err = run("--interval 0.5 -- true")
    assert.equal(0, code)
    assert.truthy(err:find("true exited with 0", 1, true), err)
    assert.truthy(err:find("no memory seen (it ended before a sample could measure it)", 1, true), err)
    assert.falsy(err:find("0 B", 1, true), err)
  end)

  it("--duration ends a command that ignores SIGTERM with SIGKILL", function()
    local t0 = coproc.now()
    local code = run("-q --duration 0.3 -- sh -c 'trap \"\" TERM; sleep 30'")
    assert.equal(128 + 9, code)
    assert.is_true(coproc.now() - t0 < 15)
  end)

  it("--pid: says whether the watched process ended or still runs (its status is not ours)", function()
    local h = io.popen("sleep 30 & echo $!")
    local pid = h:read("n")
    h:close()
    local code, err = run(("--duration 0.3 --pid %d"):format(pid))
    assert.equal(0, code)
    assert.truthy(err:find(("pid %d still running at the end of --duration"):format(pid), 1, true), err)
    os.execute("kill " .. pid)
    -- (long enough for the monitor to start on a loaded machine)
    h = io.popen("sh -c 'sleep 3; exit 7' >/dev/null & echo $!")
    pid = h:read("n")
    h:close()
    code, err = run(("--pid %d"):format(pid))
    assert.equal(0, code)
    assert.truthy(err:find(("pid %d ended;"):format(pid), 1, true), err)
    assert.falsy(err:find("exited with", 1, true), err)
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

  it("rejects a bad --plot, --csv or number before running the command (exit 2)", function()
    local marker = tmp("not-started")
    for _, opts in ipairs { "--plot x.jpg", "--plot /nonexistent-dir/p.png", "--csv /nonexistent-dir/a.csv",
        "--interval 0", "--interval=abc", "--metric foo", "--no-such-option" } do
      os.remove(marker)
      local code, err = run(opts .. " -- sh -c 'touch " .. marker .. "'")
      assert.equal(2, code, opts)
      assert.truthy(err:find("Usage:", 1, true), opts)
      assert.is_nil(read_file(marker), "the command ran despite " .. opts)
    end
    -- --opt=value forms work
    local code = run(("-q --interval=0.01 --csv=%s -- true"):format(tmp("eq.csv")))
    assert.equal(0, code)
    assert.truthy(read_file(tmp("eq.csv")):find("^time_s,"))
  end)

  it("exits non-zero naming the file when an output cannot be written after the run", function()
    local dir = tmp("vanishing")
    os.execute("mkdir -p " .. dir)
    -- the command removes the directory its CSV was to go to
    local code, err = run(("-q --interval 0.01 --csv %s/out.csv -- rm -r %s"):format(dir, dir))
    assert.equal(1, code)
    assert.truthy(err:find("cannot write CSV file '" .. dir .. "/out.csv'", 1, true))
  end)

  it("on Ctrl-C forwards it to the command, waits, writes what it has, exits 130", function()
    local marker, csv, js, png = tmp("ctrlc.marker"), tmp("ctrlc.csv"), tmp("ctrlc.json"), tmp("ctrlc.png")
    os.remove(marker)
    -- The command writes its parent's pid (the CLI's) once it runs, then
    -- becomes a sleep that SIGINT ends.
    local p = io.popen(("%s -m coproc.monitor --interval 0.01 --csv %s --json %s --plot %s -- " ..
      "sh -c 'echo $PPID > %s; exec sleep 60' 2>%s"):format(exe, csv, js, png, marker, tmp("ctrlc.err")))
    wait_for(function() local s = read_file(marker); return s and s:match("%d+\n") end, "the command to start")
    local cli = read_file(marker):match("%d+")
    os.execute("kill -INT " .. cli)
    p:read("a")
    local _, how, code = p:close()
    assert.equal("exit", how)
    assert.equal(130, code)
    local err = read_file(tmp("ctrlc.err"))
    assert.falsy(err:find("traceback", 1, true))
    assert.truthy(err:find("sh stopped by SIGINT", 1, true))
    local s = monitor.Stats.from_csv(csv)
    assert.truthy(#s.t >= 1)
    assert.equal("sleep", s.procs[1].name)
    assert.equal(s.procs[1].pid, monitor.Stats.from_json(js).pid)
    assert.equal("\137PNG", read_file(png):sub(1, 4))
  end)

  it("fails clearly on a missing command or bad options", function()
    local code, err = run("-- /nonexistent/no-such-program")
    assert.equal(127, code)
    assert.truthy(err:find("cannot run '/nonexistent/no-such-program'", 1, true))
    code, err = run("--interval -1 -- true")
    assert.equal(2, code)
    assert.truthy(err:find("--interval must be a positive number, got '-1'", 1, true))
    assert.truthy(err:find("Usage: coproc-lua -m coproc.monitor", 1, true))
    code, err = run("")
    assert.equal(2, code)
    assert.truthy(err:find("no command given", 1, true))
    code, err = run("--plot /nonexistent-dir/p.png -- true")
    assert.equal(2, code)
    assert.truthy(err:find("/nonexistent-dir/p.png", 1, true), err)
  end)
end)
