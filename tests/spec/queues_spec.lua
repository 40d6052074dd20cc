-- coproc.PriorityQueue, MultiQueue, PriorityMultiQueue (the Python coproc's
-- queues) and coproc.sleep (issue #9, items 6 and 12).
local describe, it, assert = describe, it, assert
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"

describe("coproc.PriorityQueue", function()
  it("lower priority first, FIFO among equals, nil priority last, nil items kept", function()
    local q = coproc.PriorityQueue()
    q:put("c", 5); q:put("a", 1); q:put("x"); q:put("b", 1); q:put(nil, 0); q:put("d", 5)
    assert.equal(6, q:size())
    assert.equal(6, #q)
    local got = {}
    for i = 1, 6 do got[i] = q:get() end
    assert.same({ nil, "a", "b", "c", "d", "x" }, got)
    assert.is_true(q:empty())
    assert.has_error(function() q:get() end, "get from an empty coproc.PriorityQueue")
    assert.has_error(function() q:put(1, 0 / 0) end)
  end)

  it("keeps order over many items (a heap, not a sort per put)", function()
    local q = coproc.PriorityQueue()
    math.randomseed(7)
    for i = 1, 5000 do q:put(i, math.random(10)) end
    local lastp, lasti = -1, 0
    for _ = 1, 5000 do
      local i, p = q:get()
      assert.is_true(p > lastp or (p == lastp and i > lasti))
      lastp, lasti = p, i
    end
  end)
end)

describe("coproc.MultiQueue and PriorityMultiQueue", function()
  it("refuses NaN as a channel, readably", function()
    for _, Q in ipairs { coproc.MultiQueue, coproc.PriorityMultiQueue } do
      local q = Q()
      local ok, err = pcall(q.put, q, 1, 0 / 0)
      assert.is_false(ok)
      assert.matches("bad channel (NaN cannot name a channel)", tostring(err), 1, true)
    end
  end)

  it("one FIFO per channel, nil the default channel", function()
    local q = coproc.MultiQueue()
    q:put(1); q:put(2, "a"); q:put(3); q:put(4, "a")
    assert.equal(4, q:size())
    assert.equal(2, q:size("a"))
    assert.equal(1, q:get())
    assert.equal(2, q:get("a"))
    assert.same({ 4, n = 1 }, q:get_all("a"))
    assert.same({ "a" }, q:channels())
    assert.is_true(q:empty("a"))
    assert.has_error(function() q:get("a") end)
  end)

  it("priorities per channel", function()
    local q = coproc.PriorityMultiQueue()
    q:put("late", "jobs", 9); q:put("soon", "jobs", 1); q:put("other", "log")
    assert.equal("soon", q:get("jobs"))
    assert.equal("late", q:get("jobs"))
    assert.equal("other", q:get("log"))
  end)
end)

describe("coproc.sleep", function()
  it("sleeps while messengers keep flowing: a worker's replies are read meanwhile", function()
    local w <close> = coproc.WorkerResource(function(m)
      while true do m:send_reply(m:receive_blocking()) end
    end):start()
    w.messenger:send_request("ping")
    local t0 = coproc.now()
    coproc.sleep(0.2)
    assert.is_true(coproc.now() - t0 >= 0.19)
    -- read during a sleep, without a receive (a slow start, as under
    -- valgrind, may need more than one)
    local deadline = coproc.now() + 60
    while w.messenger:queue_size() == 0 and coproc.now() < deadline do coproc.sleep(0.05) end
    assert.equal(1, w.messenger:queue_size())
    assert.equal("ping", w.messenger:receive_blocking(nil, 0))
    assert.has_error(function() coproc.sleep(-1) end)
  end)
end)
