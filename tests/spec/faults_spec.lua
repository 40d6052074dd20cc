-- Faults: errors in workers, killed workers, big values both ways, exit
-- statuses of the user's own children, malformed frames, the host dying,
-- Ctrl-C in coproc-lua.
local describe, it, assert = describe, it, assert
local spec_env = _ENV   -- busted's: finally is looked up in it while a test runs
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"
local U = require "pool_testutil"

local COPROC_LUA = os.getenv("COPROC_LUA") or "coproc-lua"

local function echo(m)
  while true do m:send_reply(m:receive_blocking()) end
end




describe("faults", function()
  it("an error in a worker reaches the host as WorkerError with the worker's traceback", function()
    local function inner(x) error("bad input: " .. tostring(x)) end
    local w <close> = coproc.WorkerResource(function(m)
      inner(m:receive_blocking())
    end):start()
    w.messenger:send_request("zzz")
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError), tostring(err))
    assert.matches("bad input: zzz", tostring(err))
    assert.matches("stack traceback", err.traceback)
    assert.matches("inner", err.traceback)
    assert.equal(w:pid(), err.pid)
    assert.is_true(w:join(10))
    assert.equal(1, w:exitcode())
  end)

  it("a worker class without run or __call is a WorkerError", function()
    local w <close> = coproc.WorkerResource({ x = 1 }):start()
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError), tostring(err))
    assert.matches("neither a 'run' method", tostring(err))
  end)

  for _, how in ipairs { "os.execute", "io.popen" } do
    it("replies sent just before " .. how .. " runs a command that kills the worker all arrive", function()
      local w <close> = coproc.WorkerResource(function(m, kw)
        local pid = m:receive_blocking()
        for i = 1, 100 do m:send_reply(i) end   -- a burst: its tail is corked
        local cmd = "kill -9 " .. pid
        if kw.how == "os.execute" then os.execute(cmd) else io.popen(cmd):close() end
        while true do end
      end):start { how = how }
      w.messenger:send_request(w:pid())
      for i = 1, 100 do assert.equal(i, w.messenger:receive_blocking(nil, 60)) end
      local ok, err = pcall(w.messenger.receive_blocking, w.messenger, nil, 60)
      assert.is_false(ok)
      assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
    end)
  end

  it("a SIGKILLed worker makes the pending receive raise WorkerDied, promptly", function()
    local w <close> = coproc.WorkerResource(function(m)
      local pid = m:receive_blocking()
      m:send_reply("got it")
      os.execute("kill -9 " .. pid)       -- dies while the host waits
      while true do end
    end):start()
    w.messenger:send_request(w:pid())
    assert.equal("got it", w.messenger:receive_blocking())
    -- The host may know of the death already (the reply and the death can be
    -- read in one round): then these sends raise WorkerDied too.
    local sent = 0
    for _, v in ipairs { "never answered", "nor this" } do
      local sok, serr = pcall(w.messenger.send_request, w.messenger, v)
      if sok then sent = sent + 1 else assert.is_true(coproc.is(serr, coproc.WorkerDied), tostring(serr)) end
    end
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger, nil, 60)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
    assert.equal(w:pid(), err.pid)
    assert.equal(9, err.signal)
    assert.equal(sent, err.unanswered)
    assert.matches("signal 9", tostring(err))
    -- and again on the next call, and sending says so too
    ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied))
    ok, err = pcall(w.messenger.send_request, w.messenger, 1)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
    assert.is_false(U.pid_exists(w:pid()))
  end)

  it("messages a worker sent before dying are still delivered", function()
    local w <close> = coproc.WorkerResource(function(m)
      for i = 1, 3 do m:send_norequest(i) end
      m:flush()
      os.execute("kill -9 " .. require("coproc").getpid())
    end):start()
    assert.is_true(w:join(20))
    assert.same({ 1, 2, 3 }, { w.messenger:receive_blocking(), w.messenger:receive_blocking(), w.messenger:receive_blocking() })
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
  end)

  it("a worker that exits normally is WorkerDied with its exit status for a further receive", function()
    local w <close> = coproc.WorkerResource(function() os.exit(7) end):start()
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
    assert.equal(7, err.exitcode)
  end)

  it("two sides sending multi-megabyte values at once both complete", function()
    local big = string.rep("h", 24 << 20)
    local w <close> = coproc.WorkerResource(function(m, kw)
      m:send_norequest(string.rep("w", kw.n))   -- sent while the host also sends
      local got = m:receive_blocking()
      m:send_reply(#got)
    end):start { n = 24 << 20 }
    w.messenger:send_request(big)
    local theirs = w.messenger:receive_blocking()
    assert.equal(24 << 20, #theirs)
    assert.equal(24 << 20, w.messenger:receive_blocking())
  end)

  it("io.popen():close() and os.execute keep their exit status", function()
    local w <close> = coproc.WorkerResource(echo):start()
    w.messenger:send_request(1)
    assert.equal(1, w.messenger:receive_blocking())
    local ok, how, code = io.popen("exit 3"):close()
    assert.same({ nil, "exit", 3 }, { ok, how, code })
    ok, how, code = os.execute("exit 5")
    assert.same({ nil, "exit", 5 }, { ok, how, code })
    ok, how, code = os.execute("kill -9 $$")
    assert.same({ nil, "signal", 9 }, { ok, how, code })
    -- the worker is unaffected
    w.messenger:send_request(2)
    assert.equal(2, w.messenger:receive_blocking())
  end)

  it("malformed frames give ProtocolError and drop only that connection", function()
    local w <close> = coproc.WorkerResource(function(m)
      m:send_norequest("good first")
      require("coproc.core").testing.send_raw(m, "\0\0\0\6\149\9\192\192\0\42")   -- unknown kind 9
      m:flush()
      pcall(m.receive_blocking, m)
    end):start()
    local other <close> = coproc.WorkerResource(echo):start()
    assert.equal("good first", w.messenger:receive_blocking())
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.ProtocolError), tostring(err))
    assert.matches("unknown frame kind", tostring(err))
    other.messenger:send_request("still fine")
    assert.equal("still fine", other.messenger:receive_blocking())
  end)

  it("truncated and oversized frames give ProtocolError", function()
    for _, raw in ipairs { "\0\0\0\50\149\0", "\127\255\255\255" } do
      local w <close> = coproc.WorkerResource(function(m, kw)
        require("coproc.core").testing.send_raw(m, kw.raw)
        m:flush()
        os.exit(0)                       -- a truncated frame then EOF
      end):start { raw = raw }
      w.messenger:set_max_frame(1 << 20)
      local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
      assert.is_false(ok)
      assert.is_true(coproc.is(err, coproc.ProtocolError) or coproc.is(err, coproc.WorkerDied), tostring(err))
      if raw:byte(1) == 127 then
        assert.is_true(coproc.is(err, coproc.ProtocolError), tostring(err))
        assert.matches("maximum frame size", tostring(err))
      end
    end
  end)

  it("a payload that does not decode raises ProtocolError for that message only", function()
    local w <close> = coproc.WorkerResource(function(m)
      require("coproc.core").testing.send_raw(m, "\0\0\0\7\149\0\192\192\0\193\193")  -- 0xc1 is never valid msgpack
      m:send_norequest("after")
      m:flush()
      pcall(m.receive_blocking, m)
    end):start()
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.ProtocolError), tostring(err))
    assert.equal("after", w.messenger:receive_blocking())
  end)

  it("killing the host (SIGKILL) takes its workers with it", function()
    local script = U.write_script([[
      local coproc = require "coproc"
      local w = coproc.WorkerResource(function(m) while true do m:receive_blocking() end end):start()
      io.write(w:pid(), "\n"); io.flush()
      while true do end
    ]])
    spec_env.finally(function() os.remove(script) end)
    local p = io.popen(("%q %q & echo $!"):format(COPROC_LUA, script))
    local host = tonumber(p:read("l"))
    local worker = tonumber(p:read("l"))
    assert.is_true(U.pid_exists(worker))
    os.execute("kill -9 " .. host)
    p:close()
    assert.is_true(U.eventually(function() return not U.pid_exists(worker) end))
  end)

  it("Ctrl-C in coproc-lua terminates all workers and exits 130", function()
    local script = U.write_script([[
      local coproc = require "coproc"
      local ws = {}
      for i = 1, 3 do
        ws[i] = coproc.WorkerResource(function(m) while true do m:receive_blocking() end end):start()
        io.write(ws[i]:pid(), " ")
      end
      io.write("\n"); io.flush()
      ws[1].messenger:receive_blocking()      -- blocks until interrupted
    ]])
    local out = os.tmpname()
    spec_env.finally(function() os.remove(script); os.remove(out) end)
    local p = io.popen(("(%q %q; echo \"status $?\") > %q 2>&1 & echo $!"):format(COPROC_LUA, script, out))
    local sh = tonumber(p:read("l"))
    p:close()
    local pids
    assert.is_true(U.eventually(function()
      local f = io.open(out); local s = f and f:read("a") or ""; if f then f:close() end
      pids = {}
      for pid in s:gmatch("(%d+) ") do pids[#pids + 1] = tonumber(pid) end
      return #pids == 3
    end))
    -- the interpreter is the subshell's child
    local host = tonumber(io.popen("pgrep -P " .. sh):read("l"))
    assert.is_number(host)
    os.execute("kill -INT " .. host)
    local text
    assert.is_true(U.eventually(function()
      local f = io.open(out); text = f:read("a"); f:close()
      return text:match("status %d+") ~= nil
    end))
    assert.matches("status 130", text)
    assert.matches("interrupted", text)
    for _, pid in ipairs(pids) do assert.is_false(U.pid_exists(pid), "worker " .. pid) end
  end)
end)
