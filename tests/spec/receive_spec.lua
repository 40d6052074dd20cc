-- Receiving: try_receive (nil, err instead of raising), the options form,
-- message-level receives, Messenger.new_pair, receive_available's .n and
-- receive_remaining past nil replies (issue #9, items 3, 5 and 12).
local describe, it, assert, before_each, after_each = describe, it, assert, before_each, after_each
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"

local function pair(opts)
  return coproc.Messenger.new_pair(opts)
end

describe("Messenger.new_pair", function()
  it("gives two connected messengers of this process", function()
    local a, b = pair()
    assert.is_true(a:is_connected() and b:is_connected())
    a:send_request("ping", "x")
    assert.equal(1, a:remaining("x"))
    assert.equal("ping", b:receive_blocking("x", 1))
    b:send_reply("pong", "x")
    assert.equal("pong", a:receive_blocking("x", 1))
    assert.equal(0, a:remaining("x"))
    a:close()
    local ok, err = pcall(b.receive_blocking, b, "x", 1)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.ResourceRequestedClose), tostring(err))
    b:close()
  end)

  it("keeps priorities, or arrival order as a MultiMessenger", function()
    local a, b = pair()
    a:send_norequest("late", nil, 5)
    a:send_norequest("soon", nil, 1)
    assert.equal("soon", b:receive_blocking(nil, 1))
    local c, d = pair { messenger_type = coproc.MultiMessenger }
    c:send_norequest("first", nil, 5)
    c:send_norequest("second", nil, 1)
    assert.equal("first", d:receive_blocking(nil, 1))
    for _, m in ipairs { a, b, c, d } do m:close() end
  end)

  it("checks its options", function()
    assert.has_error(function() pair { messenger_typ = coproc.MultiMessenger } end,
      "bad option 'messenger_typ' to 'new_pair' (did you mean 'messenger_type'?)")
    assert.has_error(function() pair { messenger_type = "fifo" } end,
      "bad option 'messenger_type' to 'new_pair' (coproc.PriorityMessenger or coproc.MultiMessenger expected)")
  end)
end)

describe("try_receive", function()
  local a, b
  before_each(function() a, b = pair() end)
  after_each(function() a:close(); b:close() end)

  it("returns the value, or nil and a Timeout without raising", function()
    local v, err = b:try_receive("x")
    assert.is_nil(v)
    assert.is_true(coproc.is(err, coproc.Timeout), tostring(err))
    a:send_norequest(42, "x")
    v, err = b:try_receive("x", 1)
    assert.equal(42, v)
    assert.is_nil(err)
    -- a nil message: nil and no error
    a:send_norequest(nil, "x")
    local n = select("#", b:try_receive("x", 1))
    assert.equal(1, n)
  end)

  it("waits up to its timeout", function()
    local t0 = coproc.now()
    local v, err = b:try_receive("x", 0.1)
    assert.is_nil(v)
    assert.is_true(coproc.is(err, coproc.Timeout))
    assert.is_true(coproc.now() - t0 >= 0.09)
  end)

  it("returns close requests, errors and a closed connection as nil, err", function()
    a:send_close_request()
    local v, err = b:try_receive("x", 1)
    assert.is_nil(v)
    assert.is_true(coproc.is(err, coproc.ResourceRequestedClose), tostring(err))
    a:send_error({ message = "went wrong" })
    v, err = b:try_receive()
    assert.is_nil(v)
    assert.is_true(coproc.is(err, coproc.WorkerError), tostring(err))
    assert.matches("went wrong", err.remote_message)
    a:close()
    v, err = b:try_receive("x", 1)
    assert.is_nil(v)
    assert.is_true(coproc.is(err, coproc.ResourceRequestedClose), tostring(err))
  end)

  it("returns an undecodable payload as a ProtocolError and goes on", function()
    require("coproc.core").testing.send_raw(a, "\0\0\0\7\149\0\161x\192\0\193")  -- [DATA, "x", nil, 0, <0xc1: never used>]
    a:send_norequest("next", "x")
    local v, err = b:try_receive("x", 1)
    assert.is_nil(v)
    assert.is_true(coproc.is(err, coproc.ProtocolError), tostring(err))
    assert.equal("next", (b:try_receive("x", 1)))
  end)

  it("raises for misuse", function()
    assert.has_error(function() b:try_receive({}, 1) end)
    assert.has_error(function() b:try_receive("x", -1) end)
  end)
end)

describe("the options form of receive_blocking", function()
  local a, b
  before_each(function() a, b = pair() end)
  after_each(function() a:close(); b:close() end)

  it("takes channel and timeout by name", function()
    a:send_norequest("on 2", 2)
    assert.equal("on 2", b:receive_blocking { channel = 2, timeout = 1 })
    local ok, err = pcall(b.receive_blocking, b, { channel = 2, timeout = 0.05 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Timeout), tostring(err))
    a:send_norequest("default")
    assert.equal("default", b:receive_blocking { timeout = 1 })
  end)

  it("works for try_receive and receive_message_blocking too", function()
    a:send_request("r", "ch")
    assert.equal("r", b:receive_message_blocking({ channel = "ch", timeout = 1 }).data)
    local v, err = b:try_receive { channel = "ch", timeout = 0.01 }
    assert.is_nil(v)
    assert.is_true(coproc.is(err, coproc.Timeout))
  end)

  it("rejects unknown keys (with a suggestion), bad values and extra arguments", function()
    assert.has_error(function() b:receive_blocking { chanel = 2, timeout = 1 } end,
      "bad option 'chanel' to 'receive_blocking' (did you mean 'channel'?)")
    assert.has_error(function() b:receive_blocking { channel = 2, timeout = 1, prio = 1 } end,
      "bad option 'prio' to 'receive_blocking'")
    assert.has_error(function() b:receive_blocking { timeout = -1 } end,
      "bad option 'timeout' to 'receive_blocking' (non-negative number expected, got -1)")
    assert.has_error(function() b:receive_blocking { channel = 1.5 } end,
      "bad option 'channel' to 'receive_blocking' (channel must be nil, a boolean, an integer or a string)")
    assert.has_error(function() b:try_receive({ channel = 1 }, 5) end,
      "bad argument #3 to 'try_receive' (nothing may follow an options table)")
    assert.has_error(function() b:receive_message_blocking { tmeout = 1 } end,
      "bad option 'tmeout' to 'receive_message_blocking' (did you mean 'timeout'?)")
  end)
end)

describe("message-level receives", function()
  local a, b
  before_each(function() a, b = pair() end)
  after_each(function() a:close(); b:close() end)

  it("say what each message is: data, channel, request or reply, priority", function()
    a:send_request({ job = 1 }, "jobs", 3)
    a:send_norequest("notice", "jobs")
    a:send_reply("answer", 7, 1)
    local m1 = b:receive_message_blocking("jobs", 1)
    assert.same({ data = { job = 1 }, channel = "jobs", is_request = true, is_reply = false, priority = 3 }, m1)
    local m2 = b:receive_message_blocking("jobs", 1)
    assert.same({ data = "notice", channel = "jobs", is_request = false, is_reply = false, priority = math.huge }, m2)
    local m3 = b:receive_message_blocking(7, 1)
    assert.same({ data = "answer", channel = 7, is_request = false, is_reply = true, priority = 1 }, m3)
    -- counted as receive_blocking counts
    assert.equal(1, b:requests_received("jobs"))
  end)

  it("let a worker answer requests and ignore notices", function()
    local w <close> = coproc.WorkerResource(function(m)
      while true do
        local msg = m:receive_message_blocking("q")
        if msg.is_request then m:send_reply(msg.data * 10, "q") end
      end
    end):start()
    local m = w.messenger
    for i = 1, 5 do
      m:send_norequest("fyi " .. i, "q")
      m:send_request(i, "q")
    end
    local got = {}
    for r in m:receive_remaining("q") do got[#got + 1] = r end
    assert.same({ 10, 20, 30, 40, 50 }, got)
  end)

  it("receive_available_messages: every message there now, with .n", function()
    assert.same({ n = 0 }, b:receive_available_messages("x"))
    a:send_norequest(nil, "x")
    a:send_request(2, "x")
    local list = b:receive_available_messages("x")
    assert.equal(2, list.n)
    assert.is_nil(list[1].data)
    assert.is_false(list[1].is_request)
    assert.equal(2, list[2].data)
    assert.is_true(list[2].is_request)
  end)

  it("receive_remaining_messages: until no request is unanswered", function()
    a:send_request(1, "x")
    a:send_request(2, "x")
    b:send_norequest("a notice in between", "x")
    b:send_reply(nil, "x")
    b:send_reply(2, "x")
    local kinds, n = {}, 0
    for msg, i in a:receive_remaining_messages("x") do
      n = i
      kinds[#kinds + 1] = msg.is_reply and ("reply " .. tostring(msg.data)) or ("notice " .. msg.data)
    end
    assert.same({ "notice a notice in between", "reply nil", "reply 2" }, kinds)
    assert.equal(3, n)
    assert.equal(0, a:remaining("x"))
  end)

  it("a MultiMessenger's messages carry no priority", function()
    local c, d = pair { messenger_type = coproc.MultiMessenger }
    c:send_request("r", nil, 4)
    local msg = d:receive_message_blocking(nil, 1)
    assert.is_nil(msg.priority)
    assert.is_true(msg.is_request)
    c:close(); d:close()
  end)
end)

describe("receive bugs", function()
  local a, b
  before_each(function() a, b = pair() end)
  after_each(function() a:close(); b:close() end)

  it("receive_available gives .n, nil values as holes", function()
    a:send_norequest(1, "x")
    a:send_norequest(nil, "x")
    a:send_norequest(3, "x")
    local list = b:receive_available("x")
    assert.equal(3, list.n)
    assert.equal(1, list[1])
    assert.is_nil(list[2])
    assert.equal(3, list[3])
  end)

  it("receive_remaining goes on past a nil reply: coproc.null stands for it, the index second", function()
    for i = 1, 3 do a:send_request(i, "x") end
    b:send_reply("one", "x")
    b:send_reply(nil, "x")
    b:send_reply("three", "x")
    local got, idx = {}, {}
    for reply, i in a:receive_remaining("x") do
      got[#got + 1] = reply
      idx[#idx + 1] = i
    end
    assert.equal(3, #got)
    assert.equal("one", got[1])
    assert.equal(coproc.null, got[2])
    assert.equal("three", got[3])
    assert.same({ 1, 2, 3 }, idx)
  end)
end)

describe("the pollable contract", function()
  local a, b
  before_each(function() a, b = pair() end)
  after_each(function() a:close(); b:close() end)

  it("pending(): a message queued or output unsent; pending(channel): a receive would not wait", function()
    assert.is_false(b:pending())
    assert.is_false(b:pending("x"))
    a:send_norequest(1, "x")
    assert.is_true(b:available("x"))      -- read into the queue: the socket is quiet now
    assert.is_true(b:pending())
    assert.is_true(b:pending("x"))
    assert.is_false(b:pending("y"))
    assert.is_false(b:pipe_poll(0))
    b:receive_blocking("x")
    assert.is_false(b:pending())
    a:close()
    assert.is_true(b:available("x") == false)
    assert.is_true(b:pending("x"))        -- the connection is down: a receive raises at once
  end)

  it("pending() writes what is corked first", function()
    a:send_norequest(1)        -- written at once
    a:send_norequest(2)        -- within 50 us: corked
    a:pending()
    assert.equal(0, a:unsent())
    assert.equal(2, #b:receive_available())
  end)

  it("pollfd, events and timeout for cqueues-style loops", function()
    assert.equal(a:fileno(), a:pollfd())
    assert.equal("r", a:events())
    assert.is_nil(b:timeout())
    a:send_norequest(1)
    b:available()
    assert.equal(0, b:timeout())
    assert.equal(1, b:receive_blocking())
    assert.is_nil(b:timeout())
  end)

  it("coproc.flush_all writes every messenger's corked output", function()
    a:send_norequest(1)
    a:send_norequest(2)
    b:send_norequest(3)
    b:send_norequest(4)
    coproc.flush_all()
    assert.equal(0, a:unsent())
    assert.equal(0, b:unsent())
  end)
end)
