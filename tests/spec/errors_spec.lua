-- One error rule (issue #9, items 1 and 2): every runtime failure is a coproc
-- error object; error values travel from workers with their class, fields
-- and traceback; an uncaught WorkerError shows the worker's traceback.
local describe, it, assert = describe, it, assert
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local coproc = require "coproc"
local U = require "pool_testutil"



describe("errors from a WorkerResource carry their value", function()
  it("a table error value arrives as err.value, readable in the message", function()
    local w <close> = coproc.WorkerResource(function(m)
      m:receive_blocking()
      error({ code = 404, msg = "not found" })
    end):start()
    w.messenger:send_request("go")
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError), tostring(err))
    assert.equal(404, err.value.code)
    assert.equal("not found", err.value.msg)
    assert.matches('{code = 404, msg = "not found"}', tostring(err), 1, true)
    assert.matches("stack traceback", err.traceback)
  end)

  it("a string error: remote_message is the message, no value", function()
    local w <close> = coproc.WorkerResource(function(m)
      m:receive_blocking()
      error("plain words", 0)
    end):start()
    w.messenger:send_request("go")
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.equal("plain words", err.remote_message)
    assert.is_nil(err.value)
  end)

  it("a coproc error raised in a worker is still recognisable: class and fields", function()
    local w <close> = coproc.WorkerResource(function(m)
      m:receive_blocking()
      local errors = require "coproc.errors"
      errors.raise(errors.Timeout, "too slow", { after = 3 })
    end):start()
    w.messenger:send_request("go")
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError), tostring(err))
    assert.equal("Timeout", err.remote_class)
    assert.is_true(coproc.is(err.value, coproc.Timeout))
    assert.equal(3, err.value.after)
    assert.equal("too slow", err.value.message)
    assert.matches("Timeout: too slow", tostring(err), 1, true)
  end)

  it("an error value that cannot be sent still reports the error", function()
    local w <close> = coproc.WorkerResource(function(m)
      m:receive_blocking()
      error({ co = coroutine.create(print) })
    end):start()
    w.messenger:send_request("go")
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError), tostring(err))
    assert.matches("co = <thread>", tostring(err), 1, true)
    assert.is_nil(err.value)
  end)
end)

describe("errors from a Pool carry their value", function()
  it("value, remote_message, remote_class and a rebuilt coproc error", function()
    local pool <close> = coproc.Pool(1)
    local ok, err = pcall(pool.apply, pool, function() error({ code = 500 }) end)
    assert.is_false(ok)
    assert.equal(500, err.value.code)
    ok, err = pcall(pool.apply, pool, function()
      local errors = require "coproc.errors"
      errors.raise(errors.Cancelled, "gave up", { step = 2 })
    end)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError), tostring(err))
    assert.equal("Cancelled", err.remote_class)
    assert.is_true(coproc.is(err.value, coproc.Cancelled))
    assert.equal(2, err.value.step)
    assert.equal("gave up", err.remote_message)
  end)
end)

describe("the error rule", function()
  it("Interrupted and OSError are classes reachable as coproc.<Name>", function()
    for _, name in ipairs { "Interrupted", "OSError", "QueueFull", "CallbackError", "MonitorError" } do
      assert.is_table(coproc[name], name)
      assert.is_true(coproc.is(coproc[name]("x"), coproc.Error), name)
    end
  end)

  it("an uncaught WorkerError under coproc-lua prints the worker's traceback too", function()
    local out, code = U.run_script([[
      local coproc = require "coproc"
      local function deep_in_the_worker() error("broken here") end
      local w <close> = coproc.WorkerResource(function(m) m:receive_blocking(); deep_in_the_worker() end):start()
      w.messenger:send_request(1)
      w.messenger:receive_blocking()
    ]])
    assert.equal(1, code)
    assert.matches("WorkerError: worker %d+: .*broken here", out)
    assert.matches("worker traceback:", out, 1, true)
    assert.matches("deep_in_the_worker", out, 1, true)
  end)

  it("errors raised by coproc.core before coproc is loaded still read well", function()
    local out = U.run_script([[
      local core = require "coproc.core"
      local ok, e = pcall(core.decode, "\193")
      print(tostring(e))
    ]])
    assert.matches("ProtocolError: ", out, 1, true)
  end)
end)
