-- WorkerResource: start methods, targets, kwargs, life cycle, the seed's
-- two patterns, and cleanup (no zombies).
local describe, it, assert = describe, it, assert
local spec_env = _ENV   -- busted's: finally is looked up in it while a test runs
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"

local function echo(m)
  while true do m:send_reply(m:receive_blocking()) end
end

-- true when pid is a zombie or gone (not a running child of ours)
local function state_of(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s:match("^%d+ %b() (%a)")
end

describe("WorkerResource", function()
  it("runs a class table with run() and kwargs as fields", function()
    local C = coproc.class { greeting = "hi", factor = 1 }
    function C:run()
      while true do
        local x = self.messenger:receive_blocking()
        self.messenger:send_reply({ self.greeting, x * self.factor })
      end
    end
    local w <close> = coproc.WorkerResource(C):start { factor = 3 }
    w.messenger:send_request(14)
    local r = w.messenger:receive_blocking()
    assert.same({ "hi", 42 }, r)
  end)

  it("runs a class with __call (the seed's form)", function()
    local C = coproc.class { verbose = false }
    C.__call = function(self)
      local ok, err = pcall(function()
        while true do self.messenger:send_reply(self.messenger:receive_blocking()) end
      end)
      assert(not ok and coproc.is(err, coproc.ResourceRequestedClose), tostring(err))
    end
    local w <close> = coproc.WorkerResource(C):start()
    w.messenger:send_request("Hello, world!")
    assert.equal("Hello, world!", w.messenger:receive_blocking())
    w:terminate()
    assert.equal(0, w:exitcode())
  end)

  it("runs a function target with (messenger, kwargs)", function()
    local w <close> = coproc.WorkerResource(function(m, kw)
      m:send_norequest(kw.a + kw.b)
    end):start { a = 40, b = 2 }
    assert.equal(42, w.messenger:receive_blocking())
    assert.is_true(w:join(10))
    assert.equal(0, w:exitcode())
  end)

  it("ships closures with upvalues to a fresh worker", function()
    local offset = 100
    local function shift(x) return x + offset end
    local w <close> = coproc.WorkerResource(function(m)
      m:send_reply(shift(m:receive_blocking()))
    end):start()
    w.messenger:send_request(1)
    assert.equal(101, w.messenger:receive_blocking())
  end)

  it("'fresh' workers do not see host globals; 'inherit' ones do", function()
    rawset(_G, "COPROC_TEST_GLOBAL", "from host")
    spec_env.finally(function() rawset(_G, "COPROC_TEST_GLOBAL", nil) end)
    local function probe(m) m:send_norequest(tostring(rawget(_G, "COPROC_TEST_GLOBAL"))) end
    local f <close> = coproc.WorkerResource(probe):start()
    assert.equal("nil", f.messenger:receive_blocking())
    local i <close> = coproc.WorkerResource(probe, { method = "inherit" }):start()
    assert.equal("from host", i.messenger:receive_blocking())
  end)

  it("'inherit' workers can use values that cannot be sent", function()
    local fh = io.tmpfile()
    local w <close> = coproc.WorkerResource(function(m)
      m:send_norequest(io.type(fh))
    end, { method = "inherit" }):start()
    assert.equal("file", w.messenger:receive_blocking())
    fh:close()
  end)

  it("a fresh start with an unsendable target raises EncodeError and makes no process", function()
    local co = coroutine.create(function() end)
    local w = coproc.WorkerResource(function() return co end)
    local ok, err = pcall(w.start, w)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.EncodeError), tostring(err))
    assert.is_nil(w:pid())
  end)

  it("checks its arguments", function()
    assert.has_error(function() coproc.WorkerResource(42) end)
    assert.has_error(function() coproc.WorkerResource(echo, { method = "spawn" }) end)
    assert.has_error(function() coproc.WorkerResource(echo, { messenger_type = {} }) end)
  end)

  it("reports life cycle errors as upstream", function()
    local w = coproc.WorkerResource(echo)
    local ok, err = pcall(w.join, w)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerIsDeadError), tostring(err))
    ok, err = pcall(w.terminate, w)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerIsAlreadyDeadError), tostring(err))
    w:start()
    ok, err = pcall(w.start, w)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerIsAlreadyAliveError), tostring(err))
    assert.is_true(w:is_alive())
    w:terminate()
    assert.is_false(w:is_alive())
    ok, err = pcall(w.terminate, w)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerIsAlreadyDeadError), tostring(err))
    -- and it can be started again
    w:start()
    w.messenger:send_request("again")
    assert.equal("again", w.messenger:receive_blocking())
    w:close()
  end)

  it("terminate asks first: the worker sees ResourceRequestedClose and exits 0", function()
    local w = coproc.WorkerResource(echo):start()
    w:terminate()
    assert.equal(0, w:exitcode())
    assert.is_nil(state_of(w:pid()))
  end)

  it("terminate kills a worker that does not listen", function()
    local w = coproc.WorkerResource(function(m)
      m:send_norequest("busy")
      while true do end
    end):start()
    assert.equal("busy", w.messenger:receive_blocking())
    w:terminate(0.2)
    local code, sig = w:exitcode()
    assert.is_nil(code)
    assert.equal(15, sig)
    assert.is_nil(state_of(w:pid()))
  end)

  it("leaves no zombie after <close>, join, terminate or garbage collection", function()
    local pids = {}
    do
      local w <close> = coproc.WorkerResource(echo):start()
      pids[#pids + 1] = w:pid()
    end
    local j = coproc.WorkerResource(function() end):start()
    j:join()
    pids[#pids + 1] = j:pid()
    local t = coproc.WorkerResource(echo):start()
    t:terminate()
    pids[#pids + 1] = t:pid()
    do
      local g = { coproc.WorkerResource(echo):start() }
      pids[#pids + 1] = g[1]:pid()
      g[1] = nil -- no reference left: only __gc stops it
      collectgarbage()
      collectgarbage()
    end
    for _, pid in ipairs(pids) do assert.is_nil(state_of(pid), "pid " .. pid) end
  end)

  it("works with MultiMessenger (FIFO only)", function()
    local w <close> = coproc.WorkerResource(function(m)
      local got = {}
      for i = 1, 3 do got[i] = m:receive_blocking() end
      m:send_reply(got)
    end, { messenger_type = coproc.MultiMessenger }):start()
    w.messenger:send_request("a", nil, 5)
    w.messenger:send_request("b", nil, 1)
    w.messenger:send_request("c", nil, 3)
    assert.same({ "a", "b", "c" }, w.messenger:receive_blocking())
  end)

  it("seeds math.random differently in each worker", function()
    local function rnd(m) m:send_norequest(math.random(1, 1 << 40)) end
    local a <close> = coproc.WorkerResource(rnd):start()
    local b <close> = coproc.WorkerResource(rnd):start()
    assert.are_not.equal(a.messenger:receive_blocking(), b.messenger:receive_blocking())
  end)

  it("supports the seed's EchoResource pattern (start/terminate held by an object)", function()
    local EchoProcess = coproc.class { verbose = false }
    function EchoProcess:run()
      while true do self.messenger:send_reply(self.messenger:receive_blocking()) end
    end
    local EchoResource = {}
    EchoResource.__index = EchoResource
    EchoResource.__close = function(self) self.resource:terminate() end
    function EchoResource.new(verbose)
      return setmetatable({ verbose = verbose, resource = coproc.WorkerResource(EchoProcess) }, EchoResource)
    end
    function EchoResource:enter() self.resource:start { verbose = self.verbose }; return self end
    function EchoResource:apply(data)
      self.resource.messenger:send_request(data)
      return self.resource.messenger:receive_blocking()
    end
    local pid
    do
      local w <close> = EchoResource.new(false):enter()
      assert.equal("Hello, world!", w:apply("Hello, world!"))
      pid = w.resource:pid()
    end
    assert.is_nil(state_of(pid))
  end)
end)

describe("coproc.wait", function()
  it("returns the messengers with a message ready, and only those", function()
    local function delayed(m)
      local x = m:receive_blocking()
      m:send_reply(x)
    end
    local a <close> = coproc.WorkerResource(delayed):start()
    local b <close> = coproc.WorkerResource(delayed):start()
    assert.same({}, coproc.wait({ a.messenger, b.messenger }, 0.05))
    b.messenger:send_request("b")
    local ready = coproc.wait({ a.messenger, b.messenger }, 10)
    assert.equal(1, #ready)
    assert.equal(b.messenger, ready[1])
    assert.equal("b", b.messenger:receive_blocking())
  end)

  it("returns a dead worker's messenger at once", function()
    local w <close> = coproc.WorkerResource(echo):start()
    os.execute("kill -9 " .. w:pid())
    local ready = coproc.wait({ w.messenger }, 30)
    assert.equal(w.messenger, ready[1])
  end)

  it("serves many workers without polling", function()
    local ws, ms = {}, {}
    for i = 1, 8 do
      ws[i] = coproc.WorkerResource(echo):start()
      ms[i] = ws[i].messenger
      ms[i]:send_request(i)
    end
    local got = 0
    while got < 8 do
      for _, m in ipairs(coproc.wait(ms, 10)) do
        for _, v in ipairs(m:receive_available()) do got = got + 1; assert.is_number(v) end
      end
    end
    for _, w in ipairs(ws) do w:close() end
  end)
end)
