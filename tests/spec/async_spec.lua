-- coproc's own scheduler (coproc.async, run_all, sleep): inside a task,
-- receives, coproc.wait, flush and future:result() yield instead of
-- blocking, so one host serves many workers from straight-line code.
local describe, it, before_each, after_each, assert = describe, it, before_each, after_each, assert
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local coproc = require "coproc"
local async = require "coproc.async"
local util = require "loops_testutil"

-- A failed test must not leave tasks behind for the next one's run_all.
local function cancel_leftovers()
  for _, t in ipairs(async._live()) do t:cancel() end
end

local echo = util.echo

describe("coproc.async", function()
  after_each(cancel_leftovers)
  it("runs tasks from run_all; a receive in one lets the others run", function()
    local w <close> = coproc.WorkerResource(echo):start()
    local m = w.messenger
    local log = {}
    coproc.async(function()
      m:send_request({ sleep = 0.4 }, "e")
      log[#log + 1] = "asked"
      local r = m:receive_blocking("e")
      log[#log + 1] = "got " .. r.sleep
    end)
    coproc.async(function()
      for i = 1, 3 do
        coproc.sleep(0.01)
        log[#log + 1] = "tick " .. i
      end
    end)
    assert.same({}, log)      -- nothing runs before the scheduler does
    coproc.run_all(10)
    assert.same({ "asked", "tick 1", "tick 2", "tick 3", "got 0.4" }, log)
  end)

  it("blocks as before outside a task, and in a coroutine that is not a task", function()
    local a, b = coproc.Messenger.new_pair()
    a:send_norequest("x")
    assert.equal("x", b:receive_blocking(nil, 1))
    local co = coroutine.wrap(function() return b:receive_blocking(nil, 0.05) end)
    local ok, err = pcall(co)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Timeout), tostring(err))
    a:close(); b:close()
  end)

  it("gives results through task:result(), outside and inside tasks", function()
    local t1 = coproc.async(function(a, b) coproc.sleep(0.01) return a + b, "two" end, 1, 2)
    local t2 = coproc.async(function() return t1:result() * 10 end)
    assert.same({ 30 }, { t2:result(5) })
    assert.same({ 3, "two" }, { t1:result() })
    assert.is_true(t1:done() and t2:done())
    assert.matches("coproc.Task%(done%)", tostring(t1))
  end)

  it("times out: receives in a task raise Timeout, run_all and result too", function()
    local a, b = coproc.Messenger.new_pair()
    local t = coproc.async(function() return b:receive_blocking("none", 0.05) end)
    local ok, err = pcall(t.result, t)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Timeout), tostring(err))
    local slow = coproc.async(function() coproc.sleep(0.5) end)
    ok, err = pcall(coproc.run_all, 0.05)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Timeout), tostring(err))
    assert.matches("1 task%(s%) not done", tostring(err))
    ok, err = pcall(slow.result, slow, 0.01)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Timeout), tostring(err))
    assert.is_true(slow:cancel())
    assert.is_false(slow:cancel())
    ok, err = pcall(slow.result, slow)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Cancelled), tostring(err))
    coproc.run_all()
    a:close(); b:close()
  end)

  it("raises a task error nobody waits for from run_all, and gives it to result() otherwise", function()
    local bad = coproc.async(function() error({ code = 7 }) end)
    local ok, err = pcall(coproc.run_all)
    assert.is_false(ok)
    assert.equal(7, err.code)
    assert.matches("stack traceback", bad.traceback)
    local bad2 = coproc.async(function() error("boom") end)
    local watcher = coproc.async(function()
      local ok2, e2 = pcall(bad2.result, bad2)
      return ok2, e2
    end)
    coproc.run_all()
    local ok3, e3 = watcher:result()
    assert.is_false(ok3)
    assert.matches("boom", e3)
  end)

  it("says when every task waits on another", function()
    local t1, t2
    t1 = coproc.async(function() return t2:result() end)
    t2 = coproc.async(function() return t1:result() end)
    local ok, err = pcall(coproc.run_all)
    assert.is_false(ok)
    assert.matches("every task waits and nothing can wake them", tostring(err))
    t1:cancel(); t2:cancel()
    -- with a timeout too: said at once, not a Timeout when it runs out
    t1 = coproc.async(function() return t2:result() end)
    t2 = coproc.async(function() return t1:result() end)
    local t0 = coproc.now()
    ok, err = pcall(coproc.run_all, 30)
    assert.is_false(ok)
    assert.matches("every task waits and nothing can wake them", tostring(err))
    assert.is_true(coproc.now() - t0 < 10)
    t1:cancel(); t2:cancel()
  end)

  it("await_available, coproc.wait and flush yield too", function()
    local w <close> = coproc.WorkerResource(echo):start()
    local m = w.messenger
    local order = {}
    coproc.async(function()
      m:send_request({ sleep = 0.3 }, "e")
      assert.is_true(m:flush(1))
      assert.is_true(m:await_available(5))
      order[#order + 1] = "available"
      m:send_request({ sleep = 0.05 }, "e")
      m:receive_blocking("e")
      local ready = coproc.wait({ m }, 5)
      order[#order + 1] = "wait " .. #ready
      m:receive_blocking("e")
    end)
    coproc.async(function()
      coproc.sleep(0.03)
      order[#order + 1] = "other"
    end)
    coproc.run_all(10)
    assert.same({ "other", "available", "wait 1" }, order)
  end)

  it("raises arguments errors", function()
    assert.has_error(function() coproc.async(42) end, "bad argument #1 to 'async' (function expected, got number)")
    assert.has_error(function() coproc.sleep(-1) end)
    assert.has_error(function() coproc.run_all(-1) end)
  end)
end)

describe("coproc.async with a Pool", function()
  local pool
  before_each(function() pool = coproc.Pool(2) end)
  after_each(function() cancel_leftovers(); pool:terminate() end)

  it("future:result() yields: tasks wait for their futures side by side", function()
    local log = {}
    local ts = {}
    for i = 1, 4 do
      ts[i] = coproc.async(function()
        local f = pool:submit(function(x) require("coproc").sleep(0.05) return x * x end, { i })
        log[#log + 1] = "submitted"
        local r = f:result(10)     -- yields: the next task submits meanwhile
        log[#log + 1] = "done"
        return r
      end)
    end
    coproc.run_all(20)
    for i = 1, 4 do assert.equal(i * i, ts[i]:result()) end
    assert.same({ "submitted", "submitted", "submitted", "submitted", "done", "done", "done", "done" }, log)
  end)

  it("map, as_completed and coproc.wait over futures work in tasks", function()
    local t = coproc.async(function()
      local squares = pool:map(function(x) return x * x end, { 1, 2, 3 })
      local fs = {}
      for i = 1, 3 do fs[i] = pool:submit(function(x) return -x end, { i }) end
      local seen = 0
      for _ in coproc.as_completed(fs, 10) do seen = seen + 1 end
      local done = coproc.wait(fs, { return_when = "all" }, 10)
      return squares, seen, #done
    end)
    local squares, seen, ndone = t:result(20)
    assert.same({ 1, 4, 9, n = 3 }, squares)
    assert.equal(3, seen)
    assert.equal(3, ndone)
  end)

  it("a future finished by another task's pump wakes its own task", function()
    -- both replies come back in one batch: whichever task pumps takes both
    local f1 = pool:submit(function() return "one" end)
    local f2 = pool:submit(function() return "two" end)
    local t1 = coproc.async(function() return f1:result(5) end)
    local t2 = coproc.async(function() return f2:result(5) end)
    coproc.run_all(10)
    assert.equal("one", t1:result())
    assert.equal("two", t2:result())
  end)
end)

describe("coproc.async, 3 workers x many requests", function()
  after_each(cancel_leftovers)
  it("delivers every reply, in order per channel, without a busy loop", function()
    local n = util.REQUESTS
    local ws = {}
    for i = 1, 3 do ws[i] = coproc.WorkerResource(util.worker):start { pace = util.PACE } end
    local clocks = util.clocks()
    for i = 1, 3 do
      coproc.async(function()
        local m = ws[i].messenger
        for k = 1, n do
          util.send_step(m, k)
          util.check_reply(k, m:receive_blocking(util.channel(k)))
        end
        m:send_request("count", "ctl")
        local counts = m:receive_blocking("ctl")
        assert.equal(n // 2, counts.even)
        assert.equal(n - n // 2, counts.odd)
      end)
    end
    coproc.run_all(120)
    local cpu, wall = clocks()
    for _, w in ipairs(ws) do w:close() end
    assert.is_true(cpu < 0.5 * wall, ("host CPU %.3f s for %.3f s of wall time"):format(cpu, wall))
  end)
end)
