-- coproc inside a luv loop: the three failures seen with a bare
-- uv.new_poll(m:fileno()) (issue #10), coproc.luv.on_message and drive,
-- and 3 workers x many requests through the adapter.
local describe, it, before_each, after_each = describe, it, before_each, after_each
local setup, assert, pending = setup, assert, pending
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local has_luv, uv = pcall(require, "luv")
if not has_luv then
  describe("coproc.luv", function()
    pending("lua-luv is not installed (scripts/deps.sh installs it)")
  end)
  return
end

local coproc = require "coproc"
local util = require "loops_testutil"
local cluv   -- required after the first block, which must run without it

local echo = util.echo

-- Run the loop at most `limit` seconds; true when it ended by itself.
local function run_for(limit)
  local timer = uv.new_timer()
  local expired = false
  timer:start(math.floor(limit * 1000), 0, function()
    expired = true
    uv.stop()
  end)
  timer:unref()
  uv.run()
  timer:stop()
  timer:close()
  uv.run("nowait")   -- the timer's close
  return not expired
end

-- Without coproc.luv (it is required after this block): the contract alone.
describe("a hand-rolled luv loop", function()
  local w, m
  before_each(function()
    assert.is_nil(package.loaded["coproc.luv"])
    w = coproc.WorkerResource(echo):start()
    m = w.messenger
  end)
  after_each(function() w:close() end)

  it("a hand-rolled loop: a prepare handle that calls coproc.flush_all is enough", function()
    local prep = uv.new_prepare()
    prep:start(coproc.flush_all)
    prep:unref()
    local poll = uv.new_poll(m:fileno())
    local got
    poll:start("r", function()
      local list = m:receive_available("e")
      if list.n > 0 then
        got = list[1]
        poll:stop()
        poll:close()
      end
    end)
    m:send_norequest("notice", "e")
    m:send_request("request", "e")
    local ok = run_for(3)
    prep:stop()
    prep:close()
    if not poll:is_closing() then poll:close() end
    uv.run("nowait")
    assert.is_true(ok, "no reply within 3 s")
    assert.equal("request", got)
  end)

end)

describe("coproc.luv", function()
  local w, m
  setup(function() cluv = require "coproc.luv" end)
  before_each(function()
    w = coproc.WorkerResource(echo):start()
    m = w.messenger
  end)
  after_each(function() w:close() end)

  it("writes a request corked behind a notice before the loop sleeps", function()
    -- Seen: send_norequest then send_request within 50 us, back to an idle
    -- loop: the request stayed corked and no reply came (2 runs of 3).
    local got
    local sub
    sub = cluv.on_message(m, function(err, data)
      assert.is_nil(err)
      got = data
      sub:stop()
    end, { channel = "e" })
    local t = uv.new_timer()
    t:start(1, 0, function()
      m:send_norequest("notice", "e")
      m:send_request("request", "e")
      t:close()
    end)
    assert.is_true(run_for(3), "no reply within 3 s: the request stayed corked")
    assert.equal("request", got)
  end)

  it("delivers a message another messenger's wait read into the queue (its socket is quiet)", function()
    -- Seen: a blocking receive on another messenger read this one's reply
    -- into its queue; the fd went quiet and the poll never fired.
    local other <close> = coproc.WorkerResource(echo):start()
    local got
    local sub
    sub = cluv.on_message(m, function(err, data)
      assert.is_nil(err)
      got = data
      sub:stop()
    end, { channel = "e" })
    m:send_request("fast", "e")
    other.messenger:send_request({ sleep = 0.2 }, "e")
    other.messenger:receive_blocking("e")    -- meanwhile m's reply arrives and is queued
    assert.equal(1, m:queue_size("e"))
    assert.is_false(m:pipe_poll(0))          -- nothing left on the socket
    assert.is_true(run_for(3), "the queued reply was never delivered")
    assert.equal("fast", got)
  end)

  it("delivers every message of a coalesced burst, one readiness event or not", function()
    -- Seen: one receive_blocking per readiness event left 1 of 5 queued.
    local burst <close> = coproc.WorkerResource(function(mm)
      mm:receive_blocking("go")
      for i = 1, 5 do mm:send_norequest(i, "b") end
      mm:flush()
      mm:receive_blocking("never")
    end):start()
    local got = {}
    local sub
    sub = cluv.on_message(burst.messenger, function(err, data)
      assert.is_nil(err)
      got[#got + 1] = data
      if #got == 5 then sub:stop() end
    end, { channel = "b" })
    burst.messenger:send_norequest("now", "go")
    assert.is_true(run_for(3), ("%d of 5 delivered"):format(#got))
    assert.same({ 1, 2, 3, 4, 5 }, got)
  end)

  it("gives message tables, and the error that ends the connection once", function()
    local msgs, errs = {}, {}
    local sub = cluv.on_message(m, function(err, data, msg)
      if err then errs[#errs + 1] = err return end
      msgs[#msgs + 1] = { data, msg.is_reply, msg.channel }
      m:send_close_request()   -- the worker ends cleanly, then its socket closes
    end, { channel = "e" })
    m:send_request("x", "e")
    assert.is_true(run_for(5), "the loop went on after the connection ended")
    assert.same({ { "x", true, "e" } }, msgs)
    assert.equal(1, #errs)
    assert.is_true(coproc.is(errs[1], coproc.WorkerDied), tostring(errs[1]))
    assert.is_false(sub:is_active())
  end)

  it("a closed messenger stops its handle; stop() ends a subscription", function()
    local sub = cluv.on_message(m, function() end, { channel = "e" })
    assert.is_true(sub:is_active())
    sub:stop()
    assert.is_false(sub:is_active())
    assert.is_true(run_for(1))
    local sub2 = cluv.on_message(m, function() end, { channel = "e" })
    m:close()
    assert.is_false(sub2:is_active())
    assert.is_true(run_for(1), "a closed messenger's handle kept the loop alive")
  end)

  it("checks its arguments", function()
    assert.has_error(function() cluv.on_message(42, print) end,
      "bad argument #1 to 'on_message' (coproc.Messenger expected, got number)")
    assert.has_error(function() cluv.on_message(m, 42) end,
      "bad argument #2 to 'on_message' (function expected, got number)")
    assert.has_error(function() cluv.on_message(m, print, { chanel = 1 }) end, "bad option 'chanel' to 'on_message'")
    assert.has_error(function() cluv.on_message(m, print, { channel = 1.5 }) end)
    assert.has_error(function() cluv.drive({}) end, "bad argument #1 to 'drive' (coproc.Pool expected, got table)")
  end)
end)

describe("coproc.luv.drive", function()
  local pool
  before_each(function() pool = coproc.Pool(2) end)
  after_each(function() pool:terminate() end)

  it("completes futures while the loop runs, and keeps it alive while work is unfinished", function()
    local d = cluv.drive(pool)
    local got = {}
    for i = 1, 10 do
      pool:submit(function(x) return x * 2 end, { i }):add_done_callback(function(f) got[#got + 1] = f:result() end)
    end
    assert.is_true(run_for(10), "the loop did not end once the work was done")
    table.sort(got)
    assert.same({ 2, 4, 6, 8, 10, 12, 14, 16, 18, 20 }, got)
    -- more work later, submitted from a callback of the loop
    local later
    local t = uv.new_timer()
    t:start(1, 0, function()
      t:close()
      pool:apply_async(function() return "later" end, {}, { callback = function(r) later = r end })
    end)
    assert.is_true(run_for(10))
    assert.equal("later", later)
    d:stop()
    assert.is_false(d:is_active())
  end)

  it("follows workers that die and are replaced", function()
    local d = cluv.drive(pool)
    local results, errs = {}, {}
    pool:submit(function() os.exit(3) end):add_done_callback(function(f)
      local e = f:exception()
      errs[#errs + 1] = e
    end)
    for i = 1, 4 do
      pool:submit(function(x) return x end, { i }):add_done_callback(function(f) results[#results + 1] = f:result() end)
    end
    assert.is_true(run_for(10))
    d:stop()
    table.sort(results)
    assert.same({ 1, 2, 3, 4 }, results)
    assert.equal(1, #errs)
    assert.is_true(coproc.is(errs[1], coproc.WorkerDied), tostring(errs[1]))
  end)
end)

describe("coproc.luv, 3 workers x many requests", function()
  it("delivers every reply, in order per channel, without a busy loop", function()
    local n = util.REQUESTS
    local ws, subs, step, counts = {}, {}, {}, {}
    for i = 1, 3 do ws[i] = coproc.WorkerResource(util.worker):start { pace = util.PACE } end
    local clocks = util.clocks()
    for i = 1, 3 do
      local m = ws[i].messenger
      step[i] = 1
      local function on_reply(err, reply)
        assert.is_nil(err)
        util.check_reply(step[i], reply)
        step[i] = step[i] + 1
        if step[i] <= n then util.send_step(m, step[i])
        else m:send_request("count", "ctl") end
      end
      subs[i] = {
        cluv.on_message(m, on_reply, { channel = "even" }),
        cluv.on_message(m, on_reply, { channel = "odd" }),
        cluv.on_message(m, function(err, c)
          assert.is_nil(err)
          counts[i] = c
          for _, s in ipairs(subs[i]) do s:stop() end
        end, { channel = "ctl" }),
      }
      util.send_step(m, 1)
    end
    local ok = run_for(120)
    local cpu, wall = clocks()
    for _, w in ipairs(ws) do w:close() end
    assert.is_true(ok, "the loop did not end")
    for i = 1, 3 do
      assert.equal(n + 1, step[i])
      assert.same({ even = n // 2, odd = n - n // 2 }, counts[i])
    end
    assert.is_true(cpu < 0.5 * wall, ("host CPU %.3f s for %.3f s of wall time"):format(cpu, wall))
  end)
end)

-- Run src as a script under coproc-lua; its stdout and stderr together.
local function run_script(src)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(src)
  f:close()
  local exe = os.getenv("COPROC_LUA") or "coproc-lua"
  local h = io.popen(exe .. " " .. script .. " 2>&1")
  local out = h:read("a")
  h:close()
  os.remove(script)
  return out
end

describe("coproc.luv.drive: workers that die", function()
  it("are replaced and their tasks fail with WorkerDied, with nothing printed by luv", function()
    local out = run_script([[
local coproc = require "coproc"
local cluv = require "coproc.luv"
local uv = require "luv"
local pool = coproc.Pool(2, { max_restarts = 100 })
local d = cluv.drive(pool)
local done, died, ok = 0, 0, 0
for i = 1, 30 do
  local fut = pool:submit(function(x) if x % 3 == 0 then os.exit(1, false) end return x end, { i })
  fut:add_done_callback(function(ft)
    done = done + 1
    local good, v = pcall(ft.result, ft, 0)
    if good and v == i then ok = ok + 1 elseif coproc.is(v, coproc.WorkerDied) then died = died + 1 end
    if done == 30 then d:stop(); pool:terminate() end
  end)
end
uv.run()
io.write(("result done=%d ok=%d died=%d\n"):format(done, ok, died))
]])
    assert.matches("result done=30 ok=20 died=10\n", out, 1, true)
    assert.equal("result done=30 ok=20 died=10\n", out)     -- and nothing else (luv printed "EBADF: ...")
  end)
end)

describe("coproc.luv.drive: a done callback that raises", function()
  it("ends the loop with the error's message and traceback, not '(null)'", function()
    local out = run_script([[
local coproc = require "coproc"
local cluv = require "coproc.luv"
local uv = require "luv"
local pool = coproc.Pool(1)
cluv.drive(pool)
pool:apply_async(function() return 1 end, {}, { callback = function() error("cb boom") end })
uv.run()
]])
    assert.matches("CallbackError: error in a done callback: .*cb boom", out)
    assert.matches("stack traceback", out, 1, true)
    assert.not_matches("(null)", out, 1, true)
  end)
end)
