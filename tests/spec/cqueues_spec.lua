-- coproc inside cqueues controllers: receives yield to the controller
-- (the ticker failure of issue #10), the messenger as a cqueues pollable,
-- quiet sockets with queued messages, drive, and 3 workers x many requests.
local describe, it, before_each, after_each, assert, pending = describe, it, before_each, after_each, assert, pending
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local has_cq, cqueues = pcall(require, "cqueues")
if not has_cq then
  describe("coproc.cqueues", function()
    pending("lua-cqueues is not installed (scripts/deps.sh installs it)")
  end)
  return
end

local coproc = require "coproc"
local ccq = require "coproc.cqueues"
local util = require "loops_testutil"

local echo = util.echo

-- Run cq until it is empty, at most limit seconds.
local function loop(cq, limit)
  local ok, err = cq:loop(limit)
  assert(ok, err)
  assert.is_true(cq:empty(), "cq:loop() timed out with coroutines left")
end

describe("coproc.cqueues", function()
  local w, m
  before_each(function()
    w = coproc.WorkerResource(echo):start()
    m = w.messenger
  end)
  after_each(function() w:close() end)

  it("lets a ticker run during a 0.32 s receive_blocking", function()
    -- Seen: a cqueues ticker got 0 ticks during a 0.32 s receive_blocking.
    local cq = cqueues.new()
    local ticks, got = 0, nil
    cq:wrap(function()
      m:send_request({ sleep = 0.32 }, "e")
      got = m:receive_blocking("e")
    end)
    cq:wrap(function()
      while not got do
        cqueues.sleep(0.01)
        ticks = ticks + 1
      end
    end)
    loop(cq, 10)
    assert.equal(0.32, got.sleep)
    assert.is_true(ticks >= 10, ("only %d ticks"):format(ticks))
  end)

  it("blocks as before outside a controller", function()
    m:send_request("x", "e")
    assert.equal("x", m:receive_blocking("e", 5))
  end)

  it("a messenger is a cqueues pollable", function()
    local cq = cqueues.new()
    local got
    cq:wrap(function()
      m:send_request("poll me", "e")
      local ready = cqueues.poll(m, 5)
      assert.equal(m, ready)
      got = m:receive_blocking("e", 0)
    end)
    loop(cq, 10)
    assert.equal("poll me", got)
  end)

  it("wakes a receive whose message another wait read into the queue (its socket is quiet)", function()
    local other <close> = coproc.WorkerResource(echo):start()
    local cq = cqueues.new()
    local got, order = nil, {}
    m:send_request({ sleep = 0.05 }, "e")
    other.messenger:send_request({ sleep = 1 }, "e")   -- its reply is never taken
    cq:wrap(function()
      got = m:receive_blocking("e", 20)       -- polls m's socket
      order[#order + 1] = "m"
    end)
    cq:wrap(function()
      -- in a plain coroutine a wait blocks: waits on the other messenger run
      -- coproc's loop, which reads m's reply into its queue (m's socket is
      -- quiet from then on)
      coroutine.wrap(function()
        local t0 = coproc.now()
        while m:queue_size("e") == 0 and coproc.now() - t0 < 20 do other.messenger:await_available(0.05) end
      end)()
      assert.equal(1, m:queue_size("e"))
      assert.is_false(m:pipe_poll(0))
      order[#order + 1] = "other"
    end)
    loop(cq, 10)
    assert.equal(0.05, got.sleep)
    assert.same({ "other", "m" }, order)
  end)

  it("pollable(m, channel) wakes only for that channel", function()
    local cq = cqueues.new()
    local woke = 0
    cq:wrap(function()
      m:send_norequest("a notice", "e")   -- queued on the worker, nothing comes back
      m:send_request("on e", "e")
      local p = ccq.pollable(m, "e")
      cqueues.poll(p, 5)
      woke = woke + 1
      assert.equal("on e", m:receive_blocking("e", 0))
    end)
    loop(cq, 10)
    assert.equal(1, woke)
    assert.has_error(function() ccq.pollable(42) end,
      "bad argument #1 to 'pollable' (coproc.Messenger expected, got number)")
  end)
end)

describe("coproc.cqueues with a Pool", function()
  local pool
  before_each(function() pool = coproc.Pool(2) end)
  after_each(function() pool:terminate() end)

  it("future:result() yields to the controller", function()
    local cq = cqueues.new()
    local results, ticks, done = {}, 0, false
    for i = 1, 3 do
      cq:wrap(function()
        results[i] = pool:submit(function(x) require("coproc").sleep(0.05) return x * 10 end, { i }):result(10)
      end)
    end
    cq:wrap(function()
      while not (results[1] and results[2] and results[3]) do
        cqueues.sleep(0.01)
        ticks = ticks + 1
      end
      done = true
    end)
    loop(cq, 20)
    assert.is_true(done)
    assert.same({ 10, 20, 30 }, results)
    assert.is_true(ticks >= 3, ("only %d ticks"):format(ticks))
  end)

  it("a coroutine waiting on a future wakes with Cancelled when another terminates the pool", function()
    local cq = cqueues.new()
    local r
    local t0 = coproc.now()
    cq:wrap(function()
      local f = pool:submit(function() require("coproc").sleep(5) return 1 end)
      r = { pcall(f.result, f) }
    end)
    cq:wrap(function() cqueues.sleep(0.1); pool:terminate() end)
    local ok, err = cq:loop(10)
    assert.is_true(ok, tostring(err))
    assert.is_false(r[1])
    assert.is_true(coproc.is(r[2], coproc.Cancelled), tostring(r[2]))
    assert.is_true(coproc.now() - t0 < 4)
  end)

  it("a coroutine waiting on a future wakes at once when another cancels it", function()
    local p1 <close> = coproc.Pool(1, { prefetch = 1 })
    p1:submit(function() require("coproc").sleep(3) return 1 end)
    local f = p1:submit(function() return 2 end)
    local cq = cqueues.new()
    local r, woke
    local t0 = coproc.now()
    cq:wrap(function() r = { pcall(f.result, f) }; woke = coproc.now() - t0 end)
    cq:wrap(function() cqueues.sleep(0.1); f:cancel() end)
    assert.is_true((cq:loop(10)))
    assert.is_true(coproc.is(r[2], coproc.Cancelled), tostring(r[2]))
    assert.is_true(woke < 1.5, ("woke after %.2f s"):format(woke))
    p1:terminate()
  end)

  it("drive(cq, pool) completes futures with callbacks while cq runs", function()
    local cq = cqueues.new()
    local d = ccq.drive(cq, pool)
    local got = {}
    for i = 1, 6 do
      pool:submit(function(x) return -x end, { i }):add_done_callback(function(f) got[#got + 1] = f:result() end)
    end
    loop(cq, 20)
    table.sort(got)
    assert.same({ -6, -5, -4, -3, -2, -1 }, got)
    -- later work brings the driver back
    pool:submit(function() return "again" end):add_done_callback(function(f) got[#got + 1] = f:result() end)
    loop(cq, 20)
    assert.equal("again", got[7])
    d:stop()
    assert.is_false(d:is_active())
    assert.has_error(function() ccq.drive(42, pool) end)
  end)
end)

describe("coproc.cqueues, 3 workers x many requests", function()
  it("delivers every reply, in order per channel, without a busy loop", function()
    local n = util.REQUESTS
    local ws = {}
    for i = 1, 3 do ws[i] = coproc.WorkerResource(util.worker):start { pace = util.PACE } end
    local cq = cqueues.new()
    local finished = 0
    local clocks = util.clocks()
    for i = 1, 3 do
      cq:wrap(function()
        local m = ws[i].messenger
        for k = 1, n do
          util.send_step(m, k)
          util.check_reply(k, m:receive_blocking(util.channel(k)))
        end
        m:send_request("count", "ctl")
        local counts = m:receive_blocking("ctl")
        assert.equal(n // 2, counts.even)
        assert.equal(n - n // 2, counts.odd)
        finished = finished + 1
      end)
    end
    loop(cq, 120)
    local cpu, wall = clocks()
    for _, w in ipairs(ws) do w:close() end
    assert.equal(3, finished)
    assert.is_true(cpu < 0.5 * wall, ("host CPU %.3f s for %.3f s of wall time"):format(cpu, wall))
  end)
end)
