-- Worker processes at the edges: fds the script holds (low numbers, fd 3,
-- closed stdio), the worker's own children and terminate, running out of
-- fds, many start/terminate cycles, a long run. Most cases run a script in
-- a separate coproc-lua (or stock lua5.4) so that its fds are known.
local describe, it, assert, pending = describe, it, assert, pending
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"

local COPROC_LUA = assert(os.getenv("COPROC_LUA"), "COPROC_LUA not set (run through ctest)")
-- The stock interpreter; the sanitizer build runs the specs under coproc-lua.
local STOCK_LUA = os.getenv("LUA") or "lua5.4"
-- Under valgrind the long and repeated cases are scaled down.
local SCALE = tonumber(os.getenv("COPROC_TEST_SCALE") or "1")

local function scaled(n, min) return math.max(min or 1, math.floor(n * SCALE)) end

local function write_file(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

local function read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_script(src)
  local path = os.tmpname() .. ".lua"
  write_file(path, src)
  return path
end

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Run a shell command; returns its output (stdout and stderr) and exit code.
local function run(cmd)
  local h = io.popen("(" .. cmd .. ") 2>&1; echo \"rc=$?\"")
  local out = h:read("a")
  h:close()
  local body, rc = out:match("^(.-)rc=(%d+)\n$")
  return body, tonumber(rc)
end

local function alive(pid)
  local s = read_file("/proc/" .. pid .. "/stat")
  if not s then return false end
  local st = s:match("^%d+ %b() (%a)")
  return st ~= "Z" and st ~= "X"
end

-- Wait (bounded) until none of pids runs; true when they are all gone.
local function gone_within(pids, seconds)
  local deadline = coproc.now() + seconds
  repeat
    local any = false
    for _, pid in ipairs(pids) do any = any or alive(pid) end
    if not any then return true end
    coproc.wait({}, 0.005)
  until coproc.now() > deadline
  return false
end

local function kill_all(pids)
  for _, pid in ipairs(pids) do
    if alive(pid) then os.execute("kill -9 " .. pid .. " 2>/dev/null") end
  end
end

local function statm_rss_kib(pid)
  local s = assert(read_file("/proc/" .. pid .. "/statm"))
  local pages = tonumber(s:match("^%d+ (%d+)"))
  return pages * 4 -- statm counts pages; 4 KiB on the machines this runs on
end

---------------------------------------------------------------- fds

-- Opens the files named in arg before anything else (so they get the lowest
-- free numbers), checks which fds they got, then lets inherit workers
-- (WorkerResource and LazyPool) and a fresh worker use them and the host
-- write around them. Prints "ok" when every file holds exactly what was
-- written and every round trip worked.
local LOG_SCRIPT = [=[
local want = {}            -- the fds the files must get, "3,4,5"
for n in arg[1]:gmatch("%d+") do want[#want + 1] = tonumber(n) end
local paths, files = {}, {}
for i = 1, #want do
  paths[i] = arg[1 + i]
  files[i] = assert(io.open(paths[i], "w"))
end
local coproc = require "coproc"
local function fd_of(path)
  for _, fd in ipairs(want) do
    local h = io.popen("readlink /proc/" .. coproc.getpid() .. "/fd/" .. fd)
    local target = h:read("l")
    h:close()
    if target == path then return fd end
  end
end
for i, path in ipairs(paths) do
  local fd = fd_of(path)
  if fd ~= want[i] then error(("file %d got fd %s, wanted %d"):format(i, tostring(fd), want[i])) end
end
local function put(s)
  for i, f in ipairs(files) do f:write(s, " ", i, "\n"); f:flush() end
end

put("host start")
local fresh <close> = coproc.WorkerResource(function(m)
  while true do m:send_reply(m:receive_blocking() + 100) end
end):start()
local inh <close> = coproc.WorkerResource(function(m)
  while true do
    local x = m:receive_blocking()
    put("worker " .. x)
    m:send_reply(x * 2)
  end
end, { method = "inherit" }):start()
for i = 1, 3 do
  inh.messenger:send_request(i)
  assert(inh.messenger:receive_blocking() == 2 * i, "inherit round trip")
  fresh.messenger:send_request(i)
  assert(fresh.messenger:receive_blocking() == 100 + i, "fresh round trip")
  put("host " .. i)
end
inh:terminate()
fresh:terminate()
local r = coproc.LazyPool(2):map(function(x) put("pool " .. x); return -x end, { 1, 2, 3, 4 })
for i = 1, 4 do assert(r[i] == -i, "pool result") end
put("host end")
for _, f in ipairs(files) do f:close() end

-- Each file: the round-trip part in order, the pool part in any order.
local expect = { "host start", "worker 1", "host 1", "worker 2", "host 2", "worker 3", "host 3",
  "pool 1", "pool 2", "pool 3", "pool 4", "host end" }
for i, path in ipairs(paths) do
  local got = {}
  for l in io.lines(path) do got[#got + 1] = l end
  if #got ~= #expect then
    error(("%s: %d lines, expected %d:\n%s"):format(path, #got, #expect, table.concat(got, "\n")))
  end
  local pool = { table.unpack(got, 8, 11) }
  table.sort(pool)
  table.move(pool, 1, 4, 8, got)
  for k, l in ipairs(expect) do
    if got[k] ~= l .. " " .. i then error(("%s line %d: %q, expected %q"):format(path, k, got[k], l .. " " .. i)) end
  end
end
print("ok")
]=]

describe("process: fds the script holds", function()
  local script = write_script(LOG_SCRIPT)

  local function case(interp, fds, redirect)
    local paths = {}
    for i = 1, #fds do paths[i] = os.tmpname() end
    local cmd = ("%s %s %s %s %s"):format(interp, sh_quote(script), table.concat(fds, ","),
      table.concat(paths, " "), redirect)
    local out, rc = run("sh -c " .. sh_quote(cmd))
    for _, p in ipairs(paths) do os.remove(p) end
    assert.equal(0, rc, out)
    assert.equal("ok\n", out:match("ok\n$") or out)
  end

  it("a log file on fd 3: inherit workers write into it, never into their connection", function()
    case(COPROC_LUA, { 3 }, "3>&- 4>&- 5>&-")
  end)

  it("files on fds 3, 4 and 5 stay intact for the host, inherit and fresh workers", function()
    case(COPROC_LUA, { 3, 4, 5 }, "3>&- 4>&- 5>&-")
  end)

  -- (The sanitizer build has no stock interpreter: coproc-lua fills fd 0.)
  local stock = STOCK_LUA ~= COPROC_LUA and it or pending
  stock("a stock lua5.4: a file on fd 0 (stdin closed) and on fd 3", function()
    case(STOCK_LUA, { 0, 3 }, "<&- 3>&- 4>&-")
  end)
end)

---------------------------------------------------------------- stdio

-- Starts a worker that reads stdin, prints and writes to stderr on every
-- request; the host does the same around round trips. The result ("ok" or
-- the error) goes to the file arg[1], opened before require "coproc" (arg[3]
-- "early": it then gets the lowest free fd) or at the end. stdin is closed
-- or /dev/null, so reading it must give "" (not protocol bytes).
local STDIO_SCRIPT = [=[
local f = arg[3] == "early" and assert(io.open(arg[1], "w"))
local coproc = require "coproc"
local function noise(who, i)
  local input = io.read("a")
  if input ~= "" then error(who .. " read " .. tostring(input) .. " from stdin") end
  print(who .. " print", i)
  io.stdout:flush()
  io.stderr:write(who, " stderr ", i, "\n")
end
local ok, err = pcall(function()
  local w <close> = coproc.WorkerResource(function(m)
    while true do
      local x = m:receive_blocking()
      noise("worker", x)
      m:send_reply(x + 1)
    end
  end, { method = arg[2] }):start()
  noise("host", 0)
  for i = 1, 3 do
    w.messenger:send_request(i)
    noise("host", i)
    local r = w.messenger:receive_blocking()
    if r ~= i + 1 then error("round trip " .. i .. " gave " .. tostring(r)) end
  end
  w:terminate()
  if w:exitcode() ~= 0 then error("worker exit code " .. tostring(w:exitcode())) end
end)
f = f or assert(io.open(arg[1], "w"))
f:write(ok and "ok" or ("failed: " .. tostring(err)))
f:close()
]=]

describe("process: closed stdio", function()
  local script = write_script(STDIO_SCRIPT)
  local closings = { { "stdin", "<&-" }, { "stdout", "</dev/null >&-" }, { "stderr", "</dev/null 2>&-" },
    { "stdin, stdout and stderr", "<&- >&- 2>&-" } }
  -- coproc-lua fills 0-2 at start (a file the script opens first gets fd 3);
  -- a stock lua5.4 at require "coproc" (so the file is opened afterwards).
  local interps = { { "coproc-lua", COPROC_LUA, "early" }, { "coproc-lua", COPROC_LUA, "late" },
    { "lua5.4", STOCK_LUA, "late" } }
  it("require 'coproc' in a stock lua5.4 opens /dev/null on each closed fd of 0-2", function()
    local res = os.tmpname()
    local code = ([[local c = require "coproc"
local out = {}
for fd = 0, 2 do
  local h = io.popen("readlink /proc/" .. c.getpid() .. "/fd/" .. fd)
  out[#out + 1] = h:read("l")
  h:close()
end
local f = io.open(%q, "w") f:write(table.concat(out, " ")) f:close()]]):format(res)
    local out, rc = run("sh -c " .. sh_quote(STOCK_LUA .. " -e " .. sh_quote(code) .. " <&- >&- 2>&-"))
    local got = read_file(res)
    os.remove(res)
    assert.equal(0, rc, out)
    assert.equal("/dev/null /dev/null /dev/null", got)
  end)

  for _, ip in ipairs(interps) do
    for _, c in ipairs(closings) do
      local name, exe, when = ip[1], ip[2], ip[3]
      it(("%s with %s closed (result file opened %s): workers print, round trips work")
        :format(name, c[1], when), function()
        for _, method in ipairs { "fresh", "inherit" } do
          local res = os.tmpname()
          local cmd = ("%s %s %s %s %s %s"):format(exe, sh_quote(script), res, method, when, c[2])
          local out, rc = run("sh -c " .. sh_quote(cmd))
          local got = read_file(res)
          os.remove(res)
          assert.equal(0, rc, out)
          assert.equal("ok", got, method .. ": " .. tostring(got) .. "\n" .. out)
        end
      end)
    end
  end
end)

---------------------------------------------------------------- groups

-- A worker function: starts `sleep 100` with io.popen and in the
-- background with os.execute, replies with both pids, then serves.
local function start_sleepers(m)
  local h = io.popen("echo $$; exec sleep 100 2>/dev/null")
  local p1 = tonumber(h:read("l"))
  local tmp = os.tmpname()
  os.execute("sleep 100 </dev/null >/dev/null 2>&1 & echo $! > " .. tmp)
  local f = io.open(tmp)
  local p2 = tonumber(f:read("l"))
  f:close()
  os.remove(tmp)
  m:send_reply({ p1, p2 })
  while true do m:receive_blocking() end
end

describe("process: a worker's own children", function()
  for _, method in ipairs { "fresh", "inherit" } do
    it(method .. ": terminate() takes what the worker started (io.popen, os.execute &)", function()
      local w = coproc.WorkerResource(start_sleepers, { method = method }):start()
      local pids = w.messenger:receive_blocking()
      assert.is_true(alive(pids[1]) and alive(pids[2]))
      w:terminate()
      local gone = gone_within(pids, 10)
      kill_all(pids)
      assert.is_true(gone, "the worker's children outlived terminate()")
    end)
  end

  it("terminate() of a worker that ignores the close request takes them too", function()
    local w = coproc.WorkerResource(function(m)
      local h = io.popen("echo $$; exec sleep 100 2>/dev/null")
      m:send_reply(tonumber(h:read("l")))
      while true do end                     -- never reads again
    end):start()
    local pid = w.messenger:receive_blocking()
    w:terminate(0.05)
    local gone = gone_within({ pid }, 10)
    kill_all({ pid })
    assert.is_true(gone)
  end)

  it("a stopped worker is terminated by SIGTERM, not SIGKILL", function()
    local w = coproc.WorkerResource(function(m)
      m:send_reply(1)
      while true do end
    end):start()
    w.messenger:receive_blocking()
    os.execute("kill -STOP " .. w:pid())
    local t0 = coproc.now()
    w:terminate(0.05)                       -- close request unread, then SIGTERM (+ SIGCONT)
    assert.is_true(coproc.now() - t0 < 5)
    assert.same({ nil, 15 }, { w:exitcode() })
  end)

  it("pool:terminate() takes what pool tasks started in the background", function()
    local pool = coproc.Pool(2)
    local function spawn_sleep()
      local tmp = os.tmpname()
      os.execute("sleep 100 </dev/null >/dev/null 2>&1 & echo $! > " .. tmp)
      local f = io.open(tmp)
      local pid = tonumber(f:read("l"))
      f:close()
      os.remove(tmp)
      return pid
    end
    local pids = pool:map(spawn_sleep, { 1, 2, 3, 4 }, { chunksize = 1 })
    local list = {}
    for i = 1, 4 do list[i] = pids[i]; assert.is_true(alive(pids[i])) end
    pool:terminate()
    local gone = gone_within(list, 30)   -- returns as soon as they are gone
    kill_all(list)
    assert.is_true(gone, "background sleeps outlived pool:terminate()")
  end)

  -- The host ends (os.exit: atexit's terminate_all; an error; the end of the
  -- script: __gc) with the worker still running.
  for _, ending in ipairs { "os.exit(0)", "error('the host fails')", "-- the end" } do
    it("a host ending with " .. ending .. " takes its workers' children along", function()
      local script = write_script(([[
local coproc = require "coproc"
W = coproc.WorkerResource(function(m)
  local h = io.popen("echo $$; exec sleep 100 2>/dev/null")
  local p1 = tonumber(h:read("l"))
  local tmp = os.tmpname()
  os.execute("sleep 100 </dev/null >/dev/null 2>&1 & echo $! > " .. tmp)
  local f = io.open(tmp)
  local p2 = tonumber(f:read("l"))
  f:close()
  os.remove(tmp)
  m:send_reply(p1 .. " " .. p2)
  while true do m:receive_blocking() end
end):start()
print("pids " .. W.messenger:receive_blocking())
io.stdout:flush()
%s
]]):format(ending))
      local out = run(COPROC_LUA .. " " .. sh_quote(script))
      os.remove(script)
      local p1, p2 = out:match("pids (%d+) (%d+)")
      assert.is_truthy(p1, out)
      local pids = { tonumber(p1), tonumber(p2) }
      local gone = gone_within(pids, 10)
      kill_all(pids)
      assert.is_true(gone, "the worker's children outlived the host")
    end)
  end

  it("workers lead their own process group; a nested worker leads its own", function()
    local function pgid(pid)
      return tonumber(read_file("/proc/" .. pid .. "/stat"):match("^%d+ %b() %a %d+ (%d+)"))
    end
    local w <close> = coproc.WorkerResource(function(m)
      local co = require "coproc"
      local inner <close> = co.WorkerResource(function(m2) m2:send_reply(co.getpid()); m2:receive_blocking() end):start()
      m:send_reply(inner.messenger:receive_blocking())
      m:receive_blocking()
    end):start()
    local inner = w.messenger:receive_blocking()
    assert.equal(w:pid(), pgid(w:pid()))
    assert.equal(inner, pgid(inner))
    assert.are_not.equal(pgid(coproc.getpid()), pgid(w:pid()))
  end)
end)

---------------------------------------------------------------- limits

-- Under `ulimit -n 40`: start workers until one fails, check the error, use
-- the ones that started, terminate them, start again.
local ULIMIT_SCRIPT = [=[
local coproc = require "coproc"
local function echo(m) while true do m:send_reply(m:receive_blocking()) end end
local ws, err = {}, nil
for i = 1, 200 do
  local w = coproc.WorkerResource(echo, { method = i % 2 == 0 and "inherit" or "fresh" })
  local ok, e = pcall(w.start, w)
  if not ok then err = e; break end
  ws[#ws + 1] = w
end
assert(err, "no failure with 40 fds")
assert(coproc.is(err, coproc.OSError), "not an OSError: " .. tostring(err))
assert(math.type(err.errno) == "integer", "errno")
assert(type(err.call) == "string", "call")
print("started", #ws)
print("error", err.errno, err.call, tostring(err))
for i, w in ipairs(ws) do
  w.messenger:send_request(i)
  assert(w.messenger:receive_blocking() == i, "round trip")
end
for _, w in ipairs(ws) do w:terminate() end
for round = 1, 2 do
  local w <close> = coproc.WorkerResource(echo):start()
  w.messenger:send_request("again")
  assert(w.messenger:receive_blocking() == "again")
end
-- a pool that asks for more workers than there are fds fails the same way
local ok, perr = pcall(coproc.Pool, 100)
assert(not ok and coproc.is(perr, coproc.OSError), "pool: " .. tostring(perr))
collectgarbage()
collectgarbage()
local w <close> = coproc.WorkerResource(echo):start()
w.messenger:send_request("after the pool")
assert(w.messenger:receive_blocking() == "after the pool")
print("ok")
]=]

describe("process: running out of fds", function()
  it("starting a worker past `ulimit -n` raises OSError; the others keep working", function()
    local script = write_script(ULIMIT_SCRIPT)
    -- Neighbouring limits run out at different calls (socketpair, dup).
    for _, limit in ipairs { 40, 41, 42 } do
      local out, rc = run("sh -c " .. sh_quote(("ulimit -n %d; exec %s %s"):format(limit, COPROC_LUA, sh_quote(script))))
      assert.equal(0, rc, out)
      assert.matches("\nok\n$", out)
      local n = tonumber(out:match("started\t(%d+)"))
      assert.is_true(n >= 3, out)
      local errno, call, msg = out:match("error\t(%d+)\t(%S+)\t([^\n]+)")
      assert.equal(24, tonumber(errno), out)            -- EMFILE
      assert.matches("OSError: cannot start a worker: " .. call .. ": Too many open files", msg, 1, true)
    end
    os.remove(script)
  end)
end)

-- n start/round trip/terminate cycles of both methods, in a host of its
-- own (a small heap: fork's copy-on-write faults cost less than in busted);
-- prints the host's fd count and children before and after.
local CYCLES_SCRIPT = [=[
local coproc = require "coproc"
local n = tonumber(arg[1])
local host = coproc.getpid()
local function lines(cmd)
  local h = io.popen(cmd)
  local t = {}
  for l in h:lines() do t[#t + 1] = l end
  h:close()
  return t
end
local function children()
  local kids = {}
  for _, tid in ipairs(lines("ls /proc/" .. host .. "/task")) do
    local f = io.open(("/proc/%d/task/%s/children"):format(host, tid))
    for c in f:read("a"):gmatch("%d+") do kids[#kids + 1] = c end
    f:close()
  end
  return #kids
end
local function cycle(method)
  local w = coproc.WorkerResource(function(m) m:send_reply(m:receive_blocking()) m:receive_blocking() end,
    { method = method })
  w:start()
  w.messenger:send_request(1)
  assert(w.messenger:receive_blocking() == 1)
  w:terminate()
end
cycle("fresh")                                  -- the first use opens the loop's fds
collectgarbage()
print("before", #lines("ls /proc/" .. host .. "/fd"), children())
local t0 = coproc.now()
for i = 1, n do cycle(i % 2 == 0 and "inherit" or "fresh") end
local dt = coproc.now() - t0
collectgarbage()
collectgarbage()
print("after", #lines("ls /proc/" .. host .. "/fd"), children())
print(("%d cycles in %.2f s (%.2f ms each)"):format(n, dt, dt / n * 1000))
]=]

describe("process: running out of fds at the first worker", function()
  it("is an OSError at every limit, never an abort (the loop's own fds included)", function()
    local script = write_script([[
local coproc = require "coproc"
local ok, e = pcall(function()
  local w <close> = coproc.WorkerResource(function(m) m:send_reply(m:receive_blocking()) end):start()
  w.messenger:send_request(5)
  return w.messenger:receive_blocking()
end)
print(ok and "worked " .. tostring(e) or (coproc.is(e, coproc.OSError) and "OSError " .. e.call) or tostring(e))
]])
    local errors = 0
    for limit = 4, 12 do
      -- (limits too low for the interpreter itself to start are skipped)
      local _, starts = run("sh -c " .. sh_quote(("ulimit -n %d; exec %s -e 'require [[coproc]]'"):format(limit, COPROC_LUA)))
      if starts ~= 0 then goto next end
      local out, rc = run("sh -c " .. sh_quote(("ulimit -n %d; exec %s %s"):format(limit, COPROC_LUA, sh_quote(script))))
      assert.equal(0, rc, limit .. ": " .. out)
      local line = out:match("^[^\n]*")
      assert.is_truthy(line == "worked 5" or line:match("^OSError %a+$"), limit .. ": " .. out)
      if line ~= "worked 5" then errors = errors + 1 end
      ::next::
    end
    os.remove(script)
    assert.is_true(errors >= 1)
  end)
end)

describe("process: many workers", function()
  it(("%d start/terminate cycles leave no fd and no child behind"):format(scaled(1000, 10)), function()
    local script = write_script(CYCLES_SCRIPT)
    local out, rc = run(("%s %s %d"):format(COPROC_LUA, sh_quote(script), scaled(1000, 10)))
    os.remove(script)
    assert.equal(0, rc, out)
    local fds0, kids0 = out:match("before\t(%d+)\t(%d+)")
    local fds1, kids1 = out:match("after\t(%d+)\t(%d+)")
    assert.is_truthy(fds0, out)
    assert.equal(fds0, fds1, out)
    assert.equal("0", kids0, out)
    assert.equal("0", kids1, out)
    print("\n  " .. out:match("%d+ cycles[^\n]*"))
  end)

  it(("%d pipelined round trips: host and worker RSS stay flat"):format(scaled(1e6, 1e4)), function()
    local w <close> = coproc.WorkerResource(function(m)
      while true do m:send_reply(m:receive_blocking()) end
    end):start()
    local m = w.messenger
    local total, window = scaled(1e6, 1e4), 100
    local rounds = total // window
    local t0 = coproc.now()
    local host0, worker0
    for r = 1, rounds do
      for i = 1, window do m:send_request(i) end
      for i = 1, window do
        if m:receive_blocking() ~= i then error("reply out of order") end
      end
      if r == rounds // 10 then
        collectgarbage()
        host0, worker0 = statm_rss_kib(coproc.getpid()), statm_rss_kib(w:pid())
      end
    end
    local dt = coproc.now() - t0
    collectgarbage()
    local host1, worker1 = statm_rss_kib(coproc.getpid()), statm_rss_kib(w:pid())
    print(("\n  %d round trips in %.2f s; RSS host %d -> %d KiB, worker %d -> %d KiB")
      :format(total, dt, host0, host1, worker0, worker1))
    assert.is_true(host1 - host0 < 4096, "host RSS grew by " .. (host1 - host0) .. " KiB")
    assert.is_true(worker1 - worker0 < 4096, "worker RSS grew by " .. (worker1 - worker0) .. " KiB")
  end)
end)
