-- coproc.mpi.WorkerResource: a stateful worker bound to a free rank, with
-- the messenger API of a local one (run by tests/mpi.cmake under
-- `mpirun -n 3 coproc-lua -m coproc.mpi`): channels, priorities, request
-- counting, the close request, errors with the remote traceback; ranks are
-- handed out and taken back; misuse is refused.
local describe, it, assert = describe, it, assert
local _ENV = _G
local coproc = require "coproc"

local Acc = coproc.class { total = 0 }
function Acc:run()
  local m = self.messenger
  while true do
    local x = m:receive_blocking("add")
    if x == "fail" then error("asked to fail") end
    self.total = self.total + x
    m:send_reply(self.total, "add")
    while m:available("log") do m:send_norequest(m:receive_blocking("log"):upper(), "log") end
  end
end

describe("coproc.mpi.WorkerResource", function()
  it("keeps state in the rank; channels and request counting as locally", function()
    local w <close> = coproc.mpi.WorkerResource(Acc):start { total = 100 }
    local m = w.messenger
    assert.is_true(w:is_alive())
    assert.matches("^rank [12] %(pid %d+ on ", w:describe())
    assert.matches("^coproc%.Messenger%(open, rank [12], ", tostring(m))
    assert.is_number(w:rank())
    m:send_norequest("hello", "log")
    m:send_request(5, "add")
    m:send_request(1, "add")
    assert.equal(2, m:remaining("add"))
    local replies = {}
    for r in m:receive_remaining("add") do replies[#replies + 1] = r end
    assert.same({ 105, 106 }, replies)
    assert.equal(0, m:remaining("add"))
    assert.equal("HELLO", m:receive_blocking("log", 10))
    assert.equal(2, m:requests_sent("add"))
    assert.equal(2, m:replies_received("add"))
  end)

  it("leaves the job's MPI yielding as it was outside its own polls", function()
    -- mpirun --oversubscribe on this machine: Open MPI yields when idle, and
    -- coproc's polls turn that off only for the few polls after a send
    local w <close> = coproc.mpi.WorkerResource(Acc):start()
    for i = 1, 50 do
      w.messenger:send_request(i, "add")
      w.messenger:receive_blocking("add", 10)
    end
    local job, now = require("coproc.mpi_core")._yield_state()
    if job ~= nil then
      assert.is_true(job)
      assert.equal(job, now)
    end
  end)

  it("queues by priority on the rank (lower first)", function()
    local Sorter = coproc.class {}
    function Sorter:run()
      local m = self.messenger
      m:receive_blocking("go")      -- everything below is queued by then
      local got = {}
      for i = 1, 5 do got[i] = m:receive_blocking() end
      m:send_reply(got)
      m:receive_blocking()
    end
    local w <close> = coproc.mpi.WorkerResource(Sorter):start()
    local m = w.messenger
    for _, p in ipairs { 5, 1, 4, 2, 3 } do m:send_norequest(p, nil, p) end
    m:send_norequest({ priority = 0.5, name = "x" })
    m:flush(10)
    m:send_norequest(true, "go")
    local got = m:receive_blocking(nil, 10)
    assert.same({ { priority = 0.5, name = "x" }, 1, 2, 3, 4 }, got)
  end)

  it("the close request ends the worker cleanly (exit code 0), and frees its rank", function()
    local w = coproc.mpi.WorkerResource(Acc):start()
    local rank = w:rank()
    w.messenger:send_close_request()
    assert.is_true(w:join(10))
    assert.equal(0, w:exitcode())
    assert.is_false(w:is_alive())
    local free = 0
    for _, r in ipairs(coproc.mpi.ranks()) do if r.state == "free" then free = free + 1 end end
    assert.equal(2, free)
    w:close()
    local w2 <close> = coproc.mpi.WorkerResource(Acc):start()
    assert.is_number(w2:rank())
    assert.is_true(rank == 1 or rank == 2)
  end)

  it("an error in the worker is a WorkerError with the remote traceback", function()
    local w <close> = coproc.mpi.WorkerResource(Acc):start()
    local m = w.messenger
    m:send_request("fail", "add")
    local ok, e = pcall(m.receive_blocking, m, "add", 10)
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.WorkerError))
    assert.matches("^rank %d: .*asked to fail", e.message)
    assert.matches("asked to fail", e.traceback)
    assert.is_true(w:join(10))
    assert.equal(1, w:exitcode())
  end)

  it("trust = 'data': the host refuses code from the rank, and the link goes on", function()
    local Evil = coproc.class {}
    function Evil:run()
      local m = self.messenger
      while true do
        local what = m:receive_blocking("q")
        if what == "code" then m:send_reply(function() return 1 end, "q") else m:send_reply({ n = 1 }, "q") end
      end
    end
    local w <close> = coproc.mpi.WorkerResource(Evil, { trust = "data" }):start()
    local m = w.messenger
    m:send_request("code", "q")
    local ok, e = pcall(m.receive_blocking, m, "q", 10)
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.ProtocolError), tostring(e))
    assert.matches("trust mode 'data'", e.message)
    m:send_request("data", "q")
    assert.same({ n = 1 }, m:receive_blocking("q", 10))
    assert.has_error(function() coproc.mpi.WorkerResource(Evil, { trust = "all" }) end)
  end)

  it("terminate, restart, and the errors of a local WorkerResource", function()
    local w = coproc.mpi.WorkerResource(Acc)
    assert.has_error(function() w:join() end)
    w:start()
    assert.has_error(function() w:start() end)
    w:terminate()
    assert.is_false(w:is_alive())
    local ok, e = pcall(w.terminate, w)
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.WorkerIsAlreadyDeadError))
    w:reset_process({ total = 1 })
    w.messenger:send_request(1, "add")
    assert.equal(2, w.messenger:receive_blocking("add", 10))
    w:close()
    w:close() -- twice is harmless
  end)

  it("says when no rank is free, and what cannot be sent", function()
    local a <close> = coproc.mpi.WorkerResource(Acc):start()
    local b <close> = coproc.mpi.WorkerResource(Acc):start()
    assert.is_true(a:is_alive() and b:is_alive())
    local ok, e = pcall(function() coproc.mpi.WorkerResource(Acc):start() end)
    assert.is_false(ok)
    assert.matches("no free rank", tostring(e))
    local ok2, e2 = pcall(function() coproc.mpi.Pool() end)
    assert.is_false(ok2)
    assert.matches("no free rank", tostring(e2))
    a:close()
    local ok3, e3 = pcall(function() coproc.mpi.WorkerResource(Acc):start { f = io.stdout } end)
    assert.is_false(ok3)
    assert.is_true(coproc.is(e3, coproc.EncodeError))
    assert.has_error(function() coproc.mpi.WorkerResource(Acc, { method = "inherit" }) end)
    assert.has_error(function() coproc.mpi.Pool { method = "inherit" } end)
    assert.has_error(function() coproc.mpi.Pool { per_rank = 0 } end)
    assert.has_error(function() coproc.mpi.Pool { maxtasksperchild = 10 } end)
    assert.has_error(function() coproc.mpi.Pool(5) end)
  end)
end)
