-- Issue #9 item 8: what concurrent.futures / multiprocessing users rely on:
-- done callbacks (errors reported, not lost), coproc.as_completed,
-- coproc.wait over futures, apply_async with callbacks, exception(), and
-- cancel() of a task already in a worker's window but not started.
local describe, it, setup, teardown, assert = describe, it, setup, teardown, assert
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local coproc = require "coproc"
local U = require "pool_testutil"

local function value(x) return x end

-- Capture warn() while f runs.
local function warnings(f)
  local got, old = {}, warn
  _G.warn = function(...) got[#got + 1] = table.concat({ ... }) end
  local ok, e = pcall(f)
  _G.warn = old
  if not ok then error(e, 0) end
  return got
end

describe("futures", function()
  local pool
  setup(function() pool = coproc.Pool(2) end)
  teardown(function() pool:terminate() end)

  it("add_done_callback: called once with the future, during a pool call; at once when done", function()
    local gate = U.gate()
    local f = pool:submit(gate.wait)
    local calls = {}
    f:add_done_callback(function(fut) calls[#calls + 1] = { "a", fut } end)
    f:add_done_callback(function(fut) calls[#calls + 1] = { "b", fut } end)
    assert.equal(0, #calls)
    gate.open()
    assert.equal("go", f:result(30))
    assert.equal(2, #calls)
    assert.equal("a", calls[1][1])
    assert.equal("b", calls[2][1])
    assert.equal(f, calls[1][2])
    f:add_done_callback(function(fut) calls[#calls + 1] = { "late", fut } end)
    assert.equal(3, #calls)
    assert.equal("late", calls[3][1])
    pool:map(value, { 1, 2, 3 })
    assert.equal(3, #calls)   -- never twice
    gate.close()
    assert.has_error(function() f:add_done_callback(42) end)
  end)

  it("callbacks run for failed and cancelled tasks; a callback may submit more work", function()
    local seen = {}
    local bad = pool:submit(function() error("boom") end)
    bad:add_done_callback(function(fut)
      seen.err = fut:exception()
      seen.more = pool:submit(value, { 99 })
    end)
    local ok = pcall(bad.result, bad, 30)
    assert.is_false(ok)
    assert.is_true(coproc.is(seen.err, coproc.WorkerError))
    assert.equal(99, seen.more:result(30))
    local one <close> = coproc.Pool(1, { prefetch = 1 })
    local gate = U.gate()
    local hold = one:submit(gate.wait)
    local queued = one:submit(value, { 1 })
    queued:add_done_callback(function(fut) seen.cancelled = fut:cancelled() end)
    assert.is_true(queued:cancel())
    assert.is_true(seen.cancelled)
    gate.open()
    hold:result(30)
    gate.close()
  end)

  it("an error in a callback is reported with warn and raised by the next pool call", function()
    local f = pool:submit(value, { 5 })
    f:add_done_callback(function() error({ code = 7 }) end)
    local after = false
    f:add_done_callback(function() after = true end)
    local w = warnings(function() assert.equal(5, f:result(30)) end)
    assert.is_true(after)                       -- the next callback still ran
    assert.equal(1, #w)
    assert.matches("CallbackError: error in a done callback", w[1])
    local ok, err = pcall(pool.map, pool, value, { 1 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.CallbackError), tostring(err))
    assert.equal(7, err.value.code)
    assert.equal(f, err.future)
    assert.matches("stack traceback", err.traceback)
    assert.same({ 1, n = 1 }, pool:map(value, { 1 }))   -- raised once
    -- and join() raises one left at the end
    local p2 = coproc.Pool(1)
    local g = p2:submit(value, { 1 })
    g:add_done_callback(function() error("late failure") end)
    p2:close()
    warnings(function()
      local jok, jerr = pcall(p2.join, p2, 30)
      assert.is_false(jok)
      assert.is_true(coproc.is(jerr, coproc.CallbackError))
      assert.matches("late failure", tostring(jerr))
    end)
  end)

  it("apply_async(fn, args, {callback, error_callback}) and the AsyncResult names", function()
    local got = {}
    local f = pool:apply_async(function(a, b) return a * b end, { 6, 7 }, {
      callback = function(r) got.r = r end, error_callback = function(e) got.e = e end })
    assert.equal(42, f:get(30))
    assert.equal(42, got.r)
    assert.is_nil(got.e)
    assert.is_true(f:ready())
    assert.is_true(f:successful())
    local g = pool:apply_async(function() error("nope") end, nil, { error_callback = function(e) got.e = e end })
    assert.is_true(g:wait(30))
    assert.is_false(g:successful())
    assert.is_true(coproc.is(got.e, coproc.WorkerError))
    assert.matches("nope", got.e.message)
    local gate = U.gate()
    local h = pool:apply_async(gate.wait)
    assert.is_false(h:wait(0.05))
    assert.has_error(function() h:successful() end)
    gate.open()
    assert.is_true(h:wait(30))
    gate.close()
  end)

  it("exception(timeout): nil on success, the error, Timeout, and Cancelled raised", function()
    assert.is_nil(pool:submit(value, { 1 }):exception(30))
    local e = pool:submit(function() error("x") end):exception(30)
    assert.is_true(coproc.is(e, coproc.WorkerError))
    local gate = U.gate()
    local slow = pool:submit(gate.wait)
    local ok, err = pcall(slow.exception, slow, 0.05)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Timeout))
    local gate2 = U.gate()
    local one <close> = coproc.Pool(1, { prefetch = 1 })
    local hold = one:submit(gate2.wait)
    local c = one:submit(value, { 1 })
    assert.is_true(c:cancel())
    ok, err = pcall(c.exception, c)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Cancelled))
    gate.open()
    gate2.open()
    slow:result(30)
    hold:result(30)
    gate.close()
    gate2.close()
  end)

  it("cancel() takes back a task already in a worker's window that it has not started", function()
    local one <close> = coproc.Pool(1)   -- default window: several tasks go out at once
    local gate = U.gate()
    local marker = os.tmpname()
    os.remove(marker)
    local hold = one:submit(gate.wait)
    local victim = one:submit(function(path) io.open(path, "w"):close(); return "ran" end, { marker })
    assert.equal(0, one:stats().queued)   -- both were sent to the worker
    U.until_true(function() return hold:running() end)
    assert.is_false(victim:running())
    assert.is_true(victim:cancel())
    assert.is_true(victim:cancelled())
    local ok, err = pcall(victim.result, victim)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Cancelled))
    assert.is_false(hold:cancel())        -- that one runs
    gate.open()
    assert.equal("go", hold:result(30))
    assert.equal(7, one:apply(value, 7)) -- the worker is past the cancelled task
    local f = io.open(marker)
    assert.is_nil(f, "the cancelled task ran")
    if f then f:close(); os.remove(marker) end
    assert.equal(0, one:stats().jobs)
    gate.close()
  end)
end)

describe("coproc.as_completed and coproc.wait over futures", function()
  it("as_completed yields each future once, as they finish; Timeout for the whole loop", function()
    local pool <close> = coproc.Pool(2)
    local gate = U.gate()
    local slow = pool:submit(gate.wait)
    local fast = { pool:submit(value, { 1 }), pool:submit(value, { 2 }) }
    local order = {}
    local ok, err = pcall(function()
      for f in coproc.as_completed({ slow, fast[1], fast[2], fast[1] }, 1.5) do order[#order + 1] = f end
    end)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Timeout), tostring(err))
    assert.equal(2, #order)
    assert.is_true((order[1] == fast[1] and order[2] == fast[2]) or (order[1] == fast[2] and order[2] == fast[1]))
    gate.open()
    order = {}
    for f in coproc.as_completed({ slow, fast[1], fast[2] }) do order[#order + 1] = f end
    assert.equal(3, #order)
    assert.equal(slow, order[3])   -- the finished ones first, in list order
    gate.close()
  end)

  it("futures of several pools in one as_completed and one wait", function()
    local a <close> = coproc.Pool(1)
    local b <close> = coproc.Pool(1)
    local gate = U.gate()
    local fa = a:submit(gate.wait, { "a" })
    local fb = b:submit(function() return require("coproc.core").getpid() end)
    local done, not_done = coproc.wait({ fa, fb }, { return_when = "first" }, 30)
    assert.same({ fb }, done)
    assert.same({ fa }, not_done)
    assert.equal(b:pids()[1], fb:result())
    gate.open()
    local seen = {}
    for f in coproc.as_completed({ fa, fb }, 30) do seen[#seen + 1] = f end
    assert.equal(2, #seen)
    assert.equal("go", fa:result())
    gate.close()
  end)

  it("wait: return_when all / first / first_error, timeout, and the (futures, timeout) form", function()
    local pool <close> = coproc.Pool(2)
    local gate = U.gate()
    local slow = pool:submit(gate.wait)
    local ok1 = pool:submit(value, { 1 })
    local bad = pool:submit(function() error("bad") end)
    local done, not_done = coproc.wait({ slow, ok1, bad }, { return_when = "first_error" }, 30)
    assert.equal(1, #not_done)
    assert.equal(slow, not_done[1])
    assert.equal(2, #done)
    done, not_done = coproc.wait({ slow, ok1 }, 0.05)     -- "all" by default, times out
    assert.same({ ok1 }, done)
    assert.same({ slow }, not_done)
    done, not_done = coproc.wait({ slow, ok1 }, { timeout = 0 })
    assert.same({ ok1 }, done)
    assert.same({ slow }, not_done)
    gate.open()
    done, not_done = coproc.wait({ slow, ok1, bad })
    assert.equal(3, #done)
    assert.equal(0, #not_done)
    -- with no error, first_error waits for all
    local x, y = pool:submit(value, { 1 }), pool:submit(value, { 2 })
    done = coproc.wait({ x, y }, { return_when = "first_error" })
    assert.equal(2, #done)
    assert.same({}, select(2, coproc.wait({}, {})))
    gate.close()
  end)

  it("coproc.wait on messengers still works as before", function()
    local w <close> = coproc.WorkerResource(function(m) m:send_norequest(m:receive_blocking()) end):start()
    assert.same({}, coproc.wait({ w.messenger }, 0))
    w.messenger:send_request("x")
    local ready = coproc.wait({ w.messenger }, 30)
    assert.equal(w.messenger, ready[1])
    assert.has_error(function() coproc.wait({ 5 }, 0) end)
  end)
end)
