-- Fresh workers through the fork server (src/forksrv.h): while a fresh
-- worker runs, the next ones are cloned from a small server, and are the
-- host's children all the same (parent, process group, exit status and
-- signal, the Monitor's tree, dying with the host); a large host starts its
-- server afresh (posix_spawn of coproc-lua) instead of forking.
local describe, it, assert = describe, it, assert
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"
local core = coproc.core

local COPROC_LUA = assert(os.getenv("COPROC_LUA"), "COPROC_LUA not set (run through ctest)")

local function read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- ppid, pgid and state of pid from /proc/<pid>/stat (nil when gone).
local function stat(pid)
  local s = read_file("/proc/" .. pid .. "/stat")
  if not s then return nil end
  local st, ppid, pgid = s:match("^%d+ %b() (%a) (%d+) (%d+)")
  return { state = st, ppid = tonumber(ppid), pgid = tonumber(pgid), name = s:match("^%d+ %((.-)%)") }
end

local function gone(pid)
  local s = stat(pid)
  return s == nil or s.state == "Z" or s.state == "X"
end

local function wait_for(cond, what, seconds)
  local deadline = coproc.now() + (seconds or 20)
  while not cond() do
    if coproc.now() > deadline then error("timed out waiting for " .. what) end
  end
end

local function echo(m)
  while true do
    local x = m:receive_blocking()
    if type(x) == "table" and x.exit then os.exit(x.exit, false) end
    m:send_reply(x)
  end
end

local function started(n)
  local ws = {}
  for i = 1, n do
    ws[i] = coproc.WorkerResource(echo):start()
    ws[i].messenger:send_request(i)
    assert.equal(i, ws[i].messenger:receive_blocking(nil, 30))
  end
  return ws
end

describe("fork server", function()
  it("serves the workers started while one runs; they are the host's children", function()
    local ws = started(3)
    local srv = core._forkserver_pid()
    assert.is_number(srv)
    local s = stat(srv)
    assert.equal("coproc-forksrv", s.name)
    assert.equal(coproc.getpid(), s.ppid)
    for i = 1, 3 do
      local st = stat(ws[i]:pid())
      assert.equal(coproc.getpid(), st.ppid)        -- the host is the parent
      assert.equal(ws[i]:pid(), st.pgid)           -- in a group of its own
    end
    -- exit status and signal, as the host's waitpid sees them
    ws[2].messenger:send_request({ exit = 5 })
    assert.is_true(ws[2]:join(30))
    assert.equal(5, ws[2]:exitcode())
    ws[3]._proc:kill(9)
    assert.is_true(ws[3]:join(30))
    local code, sig = ws[3]:exitcode()
    assert.is_nil(code)
    assert.equal(9, sig)
    assert.equal(srv, core._forkserver_pid())       -- ws[1] still runs
    local spares = core._forkserver_spares()
    assert.is_true(#spares >= 1)
    for _, pid in ipairs(spares) do
      local st = stat(pid)
      assert.equal(coproc.getpid(), st.ppid)       -- a spare is the host's child too,
      assert.equal("coproc-forksrv", st.name)      -- named like the server
    end
    ws[1]:terminate()
    -- no fresh worker left: no server either, nor spares (reaped)
    assert.is_nil(core._forkserver_pid())
    assert.is_true(gone(srv))
    assert.same({}, core._forkserver_spares())
    for _, pid in ipairs(spares) do assert.is_true(gone(pid)) end
  end)

  it("maps in, in each new worker, the pages its first workers touched", function()
    -- Each worker says how many pages were marked when it started
    -- (src/prefault.h), then works as usual.
    local function report(m)
      m:send_reply(require("coproc.core")._prefault_marked())
      echo(m)
    end
    local ws, seen = {}, {}
    for i = 1, 12 do
      ws[i] = coproc.WorkerResource(report):start()
      seen[i] = ws[i].messenger:receive_blocking(nil, 30)
      ws[i].messenger:send_request(i)
      assert.equal(i, ws[i].messenger:receive_blocking(nil, 30))
    end
    local served = false
    for i = 1, 12 do
      assert.is_number(seen[i])
      if seen[i] >= 0 and not served then
        served = true
        assert.equal(0, seen[i])                      -- the server's first worker: nothing yet
      elseif served then
        assert.is_true(seen[i] >= seen[i - 1])        -- marks only add up
      end
    end
    -- Under valgrind there is no server (its clone is refused): all -1.
    if served then assert.is_true(seen[12] > 0) end
    for _, w in ipairs(ws) do w:terminate() end
  end)

  it("is kept by a pool once it replaced a worker, so a pool of one replaces from a spare", function()
    local pool = coproc.Pool(1)
    assert.equal(2, pool:apply(function(x) return x + 1 end, 1))
    assert.is_nil(core._forkserver_pid())             -- one worker, forked by the host: no server
    for k = 1, 3 do
      local f = pool:submit(function() os.exit(3, false) end)
      local ok, err = pcall(f.result, f, 30)
      assert.is_false(ok)
      assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
      assert.equal(k + 1, pool:apply(function(x) return x + 1 end, k))
      local srv = core._forkserver_pid()
      assert.is_number(srv)                           -- kept between the death and the replacement
      local w = pool:pids()[1]
      assert.equal(coproc.getpid(), stat(w).ppid)    -- the replacement is the host's child all the same
    end
    local srv = core._forkserver_pid()
    local spares = core._forkserver_spares()
    pool:terminate()
    assert.is_nil(core._forkserver_pid())             -- given back with the pool
    assert.is_true(gone(srv))
    for _, pid in ipairs(spares) do assert.is_true(gone(pid)) end
  end)

  it("passes over a stopped (SIGSTOP) spare or server instead of waiting for it", function()
    local ws = started(3)
    local spares = core._forkserver_spares()
    assert.is_true(#spares >= 1)
    for _, pid in ipairs(spares) do os.execute("kill -STOP " .. pid) end
    local t0 = coproc.now()
    local more = started(2)
    assert.is_true(coproc.now() - t0 < 2.5, "took " .. (coproc.now() - t0) .. " s")
    for _, pid in ipairs(spares) do assert.is_true(gone(pid)) end   -- dropped and reaped
    local srv = core._forkserver_pid()
    assert.is_number(srv)
    os.execute("kill -STOP " .. srv)
    t0 = coproc.now()
    local again = started(3)   -- its two spares serve, then a new server
    assert.is_true(coproc.now() - t0 < 2.5, "took " .. (coproc.now() - t0) .. " s")
    assert.is_true(gone(srv))
    assert.are_not.equal(srv, core._forkserver_pid())
    for _, list in ipairs { ws, more, again } do
      for _, w in ipairs(list) do w:terminate() end
    end
  end)

  it("is left out of the Monitor with its spares, which sees the served workers", function()
    local ws = started(3)
    local srv = core._forkserver_pid()
    assert.is_number(srv)
    local spares = core._forkserver_spares()
    assert.is_true(#spares >= 1)
    local m <close> = coproc.Monitor { snapshot_seconds = 0.01 }:start()
    m:update_child_processes()
    local function has(stats, pid)
      for _, p in ipairs(stats.procs) do if p.pid == pid then return true end end
      return false
    end
    local stats
    wait_for(function()
      stats = m:get_stats()
      return has(stats, ws[3]:pid()) and has(stats, ws[2]:pid())
    end, "the served workers in the Monitor")
    assert.is_false(has(stats, srv))
    for _, pid in ipairs(spares) do assert.is_false(has(stats, pid)) end
    for _, w in ipairs(ws) do w:terminate() end
  end)

  it("in a large host is started afresh, and its workers die with the host", function()
    -- COPROC_FORK_SERVER=exec: what a host past 256 MiB does, in a small one.
    local script = os.tmpname() .. ".lua"
    local f = assert(io.open(script, "w"))
    f:write([[
local coproc = require "coproc"
local function echo(m) while true do m:send_reply(m:receive_blocking()) end end
local ws = {}
for i = 1, 3 do
  ws[i] = coproc.WorkerResource(echo):start()
  ws[i].messenger:send_request(i)
  assert(ws[i].messenger:receive_blocking(nil, 30) == i)
end
print(coproc.core._forkserver_pid(), ws[1]:pid(), ws[2]:pid(), ws[3]:pid())
io.stdout:flush()
io.read("l")   -- until the spec kills us
]])
    f:close()
    local out = os.tmpname()
    local h = io.popen(("COPROC_FORK_SERVER=exec exec %s %s > %s"):format(COPROC_LUA, script, out), "w")
    local line
    wait_for(function()
      line = read_file(out)
      return line and line:find("\n")
    end, "the script's pids")
    local pids = {}
    for p in line:gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
    assert.equal(4, #pids)
    local srv = pids[1]
    local host = stat(srv).ppid
    -- the server is coproc-lua afresh, not a copy of the host
    assert.equal("coproc-forksrv", stat(srv).name)
    for i = 2, 4 do assert.equal(host, stat(pids[i]).ppid) end
    os.execute("kill -9 " .. host)
    h:close()
    for i = 1, 4 do wait_for(function() return gone(pids[i]) end, "process " .. pids[i] .. " to die with its host") end
    os.remove(script)
    os.remove(out)
  end)

  it("leaves \"inherit\" workers forked from the host", function()
    local marker = {}
    _G.forksrv_spec_marker = marker
    local ws = started(2)
    local w <close> = coproc.WorkerResource(function(m)
      m:send_reply(_G.forksrv_spec_marker ~= nil)
      m:receive_blocking()
    end, { method = "inherit" }):start()
    assert.is_true(w.messenger:receive_blocking(nil, 30))
    assert.equal(coproc.getpid(), stat(w:pid()).ppid)
    _G.forksrv_spec_marker = nil
    for _, x in ipairs(ws) do x:terminate() end
  end)
end)
