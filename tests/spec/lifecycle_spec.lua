-- Issue #9 items 11 and 12: every resource type has the same <close> /
-- __gc behaviour (never raise, owner-checked in a forked child, what it
-- owns ends within a bounded time), and WorkerResource:reset_process /
-- process_exists as in the Python coproc.
local describe, it, assert = describe, it, assert
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local coproc = require "coproc"
local U = require "pool_testutil"

local function echo(m)
  while true do m:send_reply(m:receive_blocking()) end
end

local Tagged = coproc.class { tag = "none" }
function Tagged:run()
  while true do
    local _ = self.messenger:receive_blocking()
    self.messenger:send_reply(self.tag)
  end
end

local function ask(w, data)
  w.messenger:send_request(data)
  return w.messenger:receive_blocking(nil, 30)
end

describe("WorkerResource:reset_process and process_exists", function()
  it("process_exists: false before the first start, true after, also once it exited", function()
    local w = coproc.WorkerResource(echo)
    assert.is_false(w:process_exists())
    w:start()
    assert.is_true(w:process_exists())
    w:terminate()
    assert.is_true(w:process_exists())
    assert.is_false(w:is_alive())
  end)

  it("reset_process(kwargs) stops the worker and starts a new one with the new kwargs", function()
    local w <close> = coproc.WorkerResource(Tagged)
    assert.equal(w, w:reset_process { tag = "first" })   -- never started: just starts
    local pid1 = w:pid()
    assert.equal("first", ask(w, 1))
    w:reset_process { tag = "second" }
    local pid2 = w:pid()
    assert.are_not.equal(pid1, pid2)
    assert.is_false(U.pid_exists(pid1))
    assert.equal("second", ask(w, 1))
    w:reset_process()                                     -- nil: the kwargs of the last start
    assert.are_not.equal(pid2, w:pid())
    assert.equal("second", ask(w, 1))
    os.execute("kill -9 " .. w:pid())                     -- a dead worker is started again
    U.wait_dead(w:pid())
    w:reset_process { tag = "third" }
    assert.equal("third", ask(w, 1))
    assert.has_error(function() w:reset_process(5) end)
    assert.equal(0, U.zombies(coproc.getpid()))
  end)
end)

describe("<close> and __gc of every resource type", function()
  it("never raise, also for workers that died or never started", function()
    local dead = coproc.WorkerResource(echo):start()
    os.execute("kill -9 " .. dead:pid())
    U.wait_dead(dead:pid())
    local never = coproc.WorkerResource(echo)
    local wrp = coproc.WorkerResourcePool(2, echo):start()
    os.execute("kill -9 " .. wrp[1]:pid())
    U.wait_dead(wrp[1]:pid())
    local unstarted = coproc.WorkerResourcePool(2, echo)
    local pool = coproc.Pool(1)
    for _, r in ipairs { dead, never, wrp, unstarted, pool } do
      local mt = getmetatable(r)
      assert.is_function(mt.__close, tostring(r))
      assert.is_function(mt.__gc, tostring(r))
      mt.__close(r)
      mt.__close(r)        -- twice is fine
      mt.__gc(r)
    end
    assert.is_false(wrp:is_alive())
    assert.equal(0, U.zombies(coproc.getpid()))
  end)

  it("a WorkerResourcePool whose workers are stopped ends within a bounded time", function()
    local t0 = coproc.now()
    do
      local wrp <close> = coproc.WorkerResourcePool(3, echo):start()
      for _, w in ipairs(wrp) do os.execute("kill -STOP " .. w:pid()) end
    end
    assert.is_true(coproc.now() - t0 < 5, "took " .. (coproc.now() - t0) .. " s")
    assert.equal(0, #U.child_states(coproc.getpid()))
  end)

  it("a Monitor's <close> does not raise when stopping fails; the error is kept", function()
    local m = coproc.Monitor { snapshot_seconds = 0.05 }:start()
    local wpid = m:worker_pid()
    os.execute("kill -9 " .. wpid)
    U.wait_dead(wpid)
    local warned = {}
    local old = warn
    _G.warn = function(...) warned[#warned + 1] = table.concat({ ... }) end
    local ok, err = pcall(function()
      local _closing <close> = m -- luacheck: ignore
    end)
    _G.warn = old
    assert.is_true(ok, tostring(err))
    assert.is_not_nil(m.stop_error)
    assert.equal(1, #warned)
    assert.matches("Monitor", warned[1])
    assert.is_false(U.pid_exists(wpid))
  end)

  it("a LazyPool iterator dropped without a loop ends its workers when collected", function()
    local lp = coproc.LazyPool(2)
    local iter = lp:map_unordered(function(x) return x end, U.range(10))
    iter()
    assert.is_true(#U.child_states(coproc.getpid()) > 0)
    iter = nil -- luacheck: ignore (dropped on purpose)
    collectgarbage()
    collectgarbage()
    assert.equal(0, #U.child_states(coproc.getpid()))
  end)

  it("copies in a forked child own nothing: their __close/__gc leave the host's workers alone", function()
    local w = coproc.WorkerResource(echo):start()
    local wrp = coproc.WorkerResourcePool(1, echo):start()
    local pool = coproc.Pool(1)
    local wpid, rpid, ppid = w:pid(), wrp[1]:pid(), pool:pids()[1]
    local child = coproc.WorkerResource(function(m)
      for _, r in ipairs { w, wrp, pool } do
        local mt = getmetatable(r)
        pcall(mt.__close, r)
        pcall(mt.__gc, r)
      end
      m:send_norequest("done")
    end, { method = "inherit" }):start()
    assert.equal("done", child.messenger:receive_blocking(nil, 30))
    child:join(30)
    for _, pid in ipairs { wpid, rpid, ppid } do assert.is_true(U.pid_exists(pid), "pid " .. pid) end
    assert.equal("still here", ask(w, "still here"))
    assert.equal(5, pool:apply(function() return 5 end))
    w:terminate()
    wrp:terminate()
    pool:terminate()
    for _, pid in ipairs { wpid, rpid, ppid } do assert.is_false(U.pid_exists(pid)) end
  end)
end)
