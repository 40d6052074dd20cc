-- The messenger API on both sides: values, channels, priorities, counters,
-- receive variants, close and error messages.
local describe, it, before_each, after_each, assert = describe, it, before_each, after_each, assert
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local coproc = require "coproc"

-- A worker that runs commands sent by the host: {op, args...}; replies with
-- the result so each test can drive the worker side of the API.
local function driver(m)
  while true do
    local cmd = m:receive_blocking("cmd")
    local op = cmd[1]
    if op == "echo_all" then              -- echo everything on channel cmd[2]
      for _, v in ipairs(m:receive_available(cmd[2])) do m:send_reply(v, cmd[2]) end
      m:send_reply("done", "cmd")
    elseif op == "collect" then           -- receive n on channel cmd[2], reply the list
      local got = {}
      for i = 1, cmd[3] do got[i] = m:receive_blocking(cmd[2]) end
      m:send_reply(got, "cmd")
    elseif op == "send" then              -- send cmd[2] requests to the host on "up"
      for i = 1, cmd[2] do m:send_request(i, "up") end
      m:send_reply("sent", "cmd")
    elseif op == "count" then
      m:send_reply({ m:requests_sent("up"), m:replies_received("up"), m:remaining("up"),
        m:messages_received(), m:requests_received("cmd") }, "cmd")
    elseif op == "drain_up" then          -- collect replies from the host
      local got = {}
      for v in m:receive_remaining("up") do got[#got + 1] = v end
      m:send_reply(got, "cmd")
    elseif op == "close_host" then
      m:send_close_request()
    elseif op == "error_host" then
      m:send_error({ message = "custom failure", traceback = "tb here" })
    end
  end
end

describe("messenger", function()
  local w, m
  before_each(function()
    w = coproc.WorkerResource(driver):start()
    m = w.messenger
  end)
  after_each(function() w:close() end)

  local function call(...)
    m:send_request({ ... }, "cmd")
    return m:receive_blocking("cmd")
  end

  it("round-trips every kind of value", function()
    local values = { true, false, 0, -1, 2^53, math.maxinteger, math.mininteger, 1.5, -0.0, 1e308,
      math.huge, -math.huge, "", "text", "bin\0ary\255", { 1, 2, 3 }, { a = 1, b = { c = { d = "deep" } } },
      { 1, nil, 3 }, { [1.5] = "float key", [true] = "bool key" } }
    for _, v in ipairs(values) do m:send_request(v, "data") end
    local got = call("collect", "data", #values)
    for i, v in ipairs(values) do
      if type(v) == "table" then assert.same(v, got[i]) else assert.equal(v, got[i]) end
      assert.equal(math.type(v), math.type(got[i]))
    end
  end)

  it("keeps nil as a message", function()
    m:send_request(nil, "data")
    local got = call("collect", "data", 1)
    assert.same({}, got)
  end)

  it("keeps channels apart: strings, integers, booleans, nil", function()
    m:send_request("s", "name")
    m:send_request("i", 7)
    m:send_request("b", true)
    m:send_request("n")
    assert.same({ "i" }, call("collect", 7, 1))
    assert.same({ "b" }, call("collect", true, 1))
    assert.same({ "n" }, call("collect", nil, 1))
    assert.same({ "s" }, call("collect", "name", 1))
  end)

  it("rejects bad channels and priorities", function()
    assert.has_error(function() m:send_request(1, {}) end)
    assert.has_error(function() m:send_request(1, 1.5) end)
    assert.has_error(function() m:send_request(1, nil, 0/0) end)
    assert.has_error(function() m:send_request(1, string.rep("c", 300)) end)
    assert.has_error(function() m:receive_blocking(nil, -1) end)
  end)

  it("delivers lower priority first, FIFO among equals, data.priority as default", function()
    m:send_request("late")                              -- +inf
    m:send_request({ name = "p5a", priority = 5 })
    m:send_request("p1", nil, 1)
    m:send_request({ name = "p5b", priority = 5 })
    m:send_request("p-2", nil, -2)
    m:send_request({ name = "explicit", priority = 0 }, nil, 9)
    local got = call("collect", nil, 6)
    local names = {}
    for i, v in ipairs(got) do names[i] = type(v) == "table" and v.name or v end
    assert.same({ "p-2", "p1", "p5a", "p5b", "explicit", "late" }, names)
  end)

  it("reads data.priority raw: a strict instance can be sent, a proxy's __index is not asked", function()
    local Strict = { __index = function(_, k) error("strict: no field " .. tostring(k)) end }
    local strict = setmetatable({ name = "strict" }, Strict)
    local proxy = setmetatable({ name = "proxy" }, { __index = { priority = -100 } })
    m:send_request(strict, "data")                      -- no priority: +inf
    m:send_request(proxy, "data")                       -- +inf too: __index is not asked
    m:send_request({ name = "plain", priority = 1 }, "data")
    local got = call("collect", "data", 3)
    local names = {}
    for i, v in ipairs(got) do names[i] = rawget(v, "name") end
    assert.same({ "plain", "strict", "proxy" }, names)
    assert.is_function(getmetatable(got[2]).__index)   -- still a strict instance
  end)

  it("counts requests and replies per channel on both sides", function()
    for i = 1, 3 do m:send_request(i, "q") end
    assert.equal(3, m:requests_sent("q"))
    assert.equal(3, m:remaining("q"))
    assert.equal("done", call("echo_all", "q"))
    local got = {}
    for v in m:receive_remaining("q") do got[#got + 1] = v end
    assert.same({ 1, 2, 3 }, got)
    assert.equal(3, m:replies_received("q"))
    assert.equal(0, m:remaining("q"))
    assert.equal(0, m:remaining("other"))
    -- worker side counters
    assert.equal("sent", call("send", 4))
    local c = call("count")
    assert.same({ 4, 0, 4 }, { c[1], c[2], c[3] })
    -- the host answers two of the four
    for i = 1, 4 do
      local v = m:receive_blocking("up")
      if i <= 2 then m:send_reply(v * 10, "up") end
    end
    assert.equal(4, m:requests_received("up"))
    assert.equal(2, m:replies_sent("up"))
    assert.is_true(m:messages_sent() >= 6)
    assert.is_true(m:messages_received() >= 8)
  end)

  it("receive_blocking times out with coproc.Timeout", function()
    local ok, err = pcall(m.receive_blocking, m, "nothing", 0.05)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Timeout), tostring(err))
    assert.matches("Timeout", tostring(err))
  end)

  it("available, await_available, queue_size, pipe_poll, receive_available", function()
    assert.is_false(m:available("x"))
    assert.is_false(m:await_available(0.02))
    assert.same({ n = 0 }, m:receive_available("x"))
    m:send_request("a", "x")
    m:send_request("b", "x")
    call("echo_all", "x")
    assert.is_true(m:available("x"))
    assert.equal(2, m:queue_size("x"))
    assert.is_true(m:await_available(1))
    assert.same({ "a", "b", n = 2 }, m:receive_available("x"))
    assert.equal(0, m:queue_size("x"))
    assert.is_false(m:pipe_poll(0))
    assert.is_number(m:fileno())
    assert.matches("coproc.Messenger", tostring(m))
  end)

  it("send_request_multiple sends each item as a request", function()
    m:send_request_multiple({ "x", "y", "z" }, "mult")
    assert.equal(3, m:requests_sent("mult"))
    assert.same({ "x", "y", "z" }, call("collect", "mult", 3))
  end)

  it("a close request from the worker raises ResourceRequestedClose in the host", function()
    m:send_request({ "close_host" }, "cmd")
    local ok, err = pcall(m.receive_blocking, m, "cmd")
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.ResourceRequestedClose), tostring(err))
  end)

  it("an error sent with send_error raises WorkerError with its traceback", function()
    m:send_request({ "error_host" }, "cmd")
    local ok, err = pcall(m.receive_blocking, m, "cmd")
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError), tostring(err))
    assert.equal("custom failure", err.remote_message)
    assert.equal("tb here", err.traceback)
    assert.equal(w:pid(), err.pid)
  end)

  it("unsendable values raise EncodeError and write nothing", function()
    local before = m:messages_sent()
    for _, bad in ipairs { io.stdout, coroutine.create(print), { f = io.stderr } } do
      local ok, err = pcall(m.send_request, m, bad, "data")
      assert.is_false(ok)
      assert.is_true(coproc.is(err, coproc.EncodeError), tostring(err))
    end
    assert.equal(before, m:messages_sent())
    assert.equal(0, m:requests_sent("data"))
    m:send_request("fine", "data")
    assert.same({ "fine" }, call("collect", "data", 1))
  end)

  it("oversized values raise EncodeError on the sender and nothing is written", function()
    m:set_max_frame(1024)
    local ok, err = pcall(m.send_request, m, string.rep("x", 4096), "data")
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.EncodeError), tostring(err))
    assert.matches("maximum frame size", tostring(err))
    m:send_request("small", "data")
    assert.same({ "small" }, call("collect", "data", 1))
  end)

  it("a closed messenger says so, for every method but close and the state queries", function()
    m:close()
    m:close()   -- idempotent
    for _, name in ipairs { "send_request", "send_reply", "send_norequest", "receive_blocking",
        "receive_available", "available", "remaining", "requests_sent", "replies_received",
        "queue_size", "messages_sent", "messages_received", "fileno", "flush", "unsent",
        "queued_bytes", "send_timeout", "pipe_poll", "await_available" } do
      assert.has_error(function() m[name](m, 1) end, "attempt to use a closed coproc.Messenger", name)
    end
    assert.is_true(m:is_closed())
    assert.is_false(m:is_connected())
    assert.matches("closed", tostring(m))
  end)
end)

describe("counting sends", function()
  it("a send_request that raises is not counted", function()
    local w <close> = coproc.WorkerResource(function() os.exit(3) end):start()
    assert.is_true(w:join(30))
    local m = w.messenger
    for _ = 1, 3 do
      local ok, err = pcall(m.send_request, m, "lost", "ch")
      assert.is_false(ok)
      assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
      assert.equal(3, err.exitcode)
    end
    assert.equal(0, m:requests_sent("ch"))
    assert.equal(0, m:remaining("ch"))
    assert.equal(0, m:messages_sent())
    local ok, err = pcall(m.send_request_slice, m, {}, { 1 }, 1, 1, "ch")
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
    assert.equal(0, m:requests_sent("ch"))
  end)
end)

describe("messenger timeouts", function()
  it("receive_blocking with timeout 0 takes what has already arrived", function()
    local w <close> = coproc.WorkerResource(function(m)
      m:send_norequest("here")
      m:receive_blocking()
    end):start()
    -- wait until the bytes are in the socket, without reading them
    assert.is_true(w.messenger:pipe_poll(10))
    assert.equal("here", w.messenger:receive_blocking(nil, 0))
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger, nil, 0)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Timeout), tostring(err))
  end)
end)

describe("coalesced sends", function()
  it("a worker's last messages are not held back while it computes", function()
    local w <close> = coproc.WorkerResource(function(m)
      for i = 1, 50 do m:send_norequest(i) end   -- a burst: the tail is buffered
      local x = 0
      while true do x = x + 1 end                -- then computes, never calling coproc
    end):start()
    local got = {}
    for i = 1, 50 do got[i] = w.messenger:receive_blocking(nil, 20) end
    assert.equal(50, got[50])
  end)
end)

describe("send_request_slice", function()
  it("sends head and a slice of a list as one array request", function()
    local w <close> = coproc.WorkerResource(function(m)
      while true do m:send_reply(m:receive_blocking()) end
    end):start()
    local m = w.messenger
    local list = { 10, 20, 30, 40, 50 }
    m:send_request_slice({ "t", 7 }, list, 2, 4)
    assert.same({ "t", 7, 20, 30, 40 }, m:receive_blocking())
    m:send_request_slice({}, { 1, nil, 3 }, 1, 3)          -- a hole in the slice stays a hole
    local r = m:receive_blocking()
    assert.same({ 1, nil, 3 }, { r[1], r[2], r[3] })
    m:send_request_slice({ "empty" }, list, 3, 2)          -- hi < lo: only the head
    assert.same({ "empty" }, m:receive_blocking())
    assert.equal(3, m:requests_sent())
    local ok, err = pcall(m.send_request_slice, m, { "x" }, { io.stdout }, 1, 1)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.EncodeError), tostring(err))
    assert.equal(3, m:requests_sent())
    assert.has_error(function() m:send_request_slice({}, list, 0, 1) end)
  end)
end)
