-- coproc.WorkerResourcePool: the upstream building block.
local describe, it, assert = describe, it, assert
local _ENV = _G
local coproc = require "coproc"
local U = require "pool_testutil"

local EchoProcess = coproc.class { prefix = "", verbose = false }
function EchoProcess:run()
  while true do
    local data = self.messenger:receive_blocking()
    self.messenger:send_reply(self.prefix .. tostring(data))
  end
end

describe("coproc.WorkerResourcePool", function()
  it("starts, iterates, is_alive, joins", function()
    local pool = coproc.WorkerResourcePool(3, EchoProcess, { prefix = ">" })
    assert.equal(3, #pool)
    assert.is_false(pool:is_alive())
    assert.equal(pool, pool:start())
    assert.is_true(pool:is_alive())
    local pids = {}
    for i, w in pool:workers() do
      assert.equal(pool[i], w)
      pids[i] = w:pid()
      w.messenger:send_request("hi")
      assert.equal(">hi", w.messenger:receive_blocking(nil, 10))
    end
    for i, w in ipairs(pool) do assert.equal(pids[i], w:pid()) end
    assert.is_true(pool:join(10))
    assert.is_false(pool:is_alive())
    for _, pid in ipairs(pids) do assert.is_false(U.pid_exists(pid)) end
  end)

  it("start kwargs overlay the constructor's", function()
    local pool <close> = coproc.WorkerResourcePool(1, EchoProcess, { prefix = "a:" })
    pool:start { prefix = "b:" }
    pool[1].messenger:send_request(1)
    assert.equal("b:1", pool[1].messenger:receive_blocking(nil, 10))
  end)

  it("map_messages feeds requests and yields every reply as it comes", function()
    local pool <close> = coproc.WorkerResourcePool(2, EchoProcess, { prefix = "#" }):start()
    local got, by = {}, {}
    for i, reply in pool:map_messages(U.range(25)) do
      got[#got + 1] = reply
      by[i] = (by[i] or 0) + 1
    end
    table.sort(got, function(a, b) return tonumber(a:sub(2)) < tonumber(b:sub(2)) end)
    for k = 1, 25 do assert.equal("#" .. k, got[k]) end
    assert.equal(25, (by[1] or 0) + (by[2] or 0))
    -- an iterator function as the source
    local k, n = 0, 0
    for _ in pool:map_messages(function() k = k + 1; if k <= 5 then return k end end) do n = n + 1 end
    assert.equal(5, n)
    for _, w in ipairs(pool) do assert.equal(0, w.messenger:remaining()) end
  end)

  it("map_messages after a loop left by break: its own replies, all of them", function()
    local pool <close> = coproc.WorkerResourcePool(2, EchoProcess, { prefix = "#" }):start()
    for _ in pool:map_messages(U.range(6)) do break end   -- luacheck: ignore 512 (leaves requests unanswered)
    local got = {}
    for _, reply in pool:map_messages({ "a", "b", "c" }) do got[#got + 1] = reply end
    table.sort(got)
    assert.same({ "#a", "#b", "#c" }, got)
    for _, w in ipairs(pool) do assert.equal(0, w.messenger:remaining()) end
  end)

  it("map_messages on a pool not started says so", function()
    local pool = coproc.WorkerResourcePool(1, EchoProcess)
    local ok, err = pcall(pool.map_messages, pool, { 1 })
    assert.is_false(ok)
    assert.matches("worker 1 is not started (call start() first)", tostring(err), 1, true)
  end)

  it("map_messages yields (worker index, reply): a nil reply does not end the loop", function()
    local Maybe = coproc.class {}
    function Maybe:run()
      while true do
        local d = self.messenger:receive_blocking()
        if d % 2 == 0 then self.messenger:send_reply(nil) else self.messenger:send_reply(d) end
      end
    end
    local pool <close> = coproc.WorkerResourcePool(2, Maybe):start()
    local n, nils, sum = 0, 0, 0
    for i, reply in pool:map_messages(U.range(20)) do
      assert.is_true(i == 1 or i == 2)
      n = n + 1
      if reply == nil then nils = nils + 1 else sum = sum + reply end
    end
    assert.equal(20, n)
    assert.equal(10, nils)
    assert.equal(100, sum)
    -- a coproc.iter source
    n = 0
    for _ in pool:map_messages(coproc.iter(ipairs({ 1, 3, 5 }))) do n = n + 1 end
    assert.equal(3, n)
  end)

  it("wait_until_dead(timeout): true once every worker exited on its own, false at the timeout", function()
    local Once = coproc.class {}
    function Once:run()
      local d = self.messenger:receive_blocking()
      self.messenger:send_reply(d)
    end
    local pool <close> = coproc.WorkerResourcePool(3, Once)
    assert.is_true(pool:wait_until_dead(0))   -- never started
    pool:start()
    assert.is_false(pool:wait_until_dead(0.05))
    for i, w in pool:workers() do
      w.messenger:send_request(i)
      assert.equal(i, w.messenger:receive_blocking(nil, 10))
    end
    assert.is_true(pool:wait_until_dead(30))
    assert.is_false(pool:is_alive())
    for _, w in ipairs(pool) do assert.equal(0, w:exitcode()) end
    assert.has_error(function() pool:wait_until_dead(-1) end)
  end)

  it("map_messages raises WorkerDied when a worker dies", function()
    local Crash = coproc.class {}
    function Crash:run()
      local d = self.messenger:receive_blocking()
      if d == 3 then os.exit(5, false) end
      self.messenger:send_reply(d)
      while true do self.messenger:send_reply(self.messenger:receive_blocking()) end
    end
    local pool <close> = coproc.WorkerResourcePool(2, Crash):start()
    local ok, err = pcall(function()
      for _ in pool:map_messages(U.range(10)) do end
    end)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
  end)

  it("terminate never raises, also for dead workers; <close> terminates", function()
    local pids
    do
      local pool <close> = coproc.WorkerResourcePool(2, EchoProcess):start()
      pids = { pool[1]:pid(), pool[2]:pid() }
      os.execute("kill -9 " .. pids[1])
      U.wait_dead(pids[1])
      pool:terminate(1)
      pool:terminate(1)
    end
    for _, pid in ipairs(pids) do assert.is_false(U.pid_exists(pid)) end
    assert.equal(0, U.zombies(coproc.getpid()))
  end)
end)
