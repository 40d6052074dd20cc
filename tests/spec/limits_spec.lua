-- The messenger's limits: the send timeout and unsent(), close and error
-- sends that never wait, a worker that closed its end but runs on, large
-- frames that cost what has arrived, the bound on queued bytes, and Ctrl-C
-- in a stock lua5.4.
local describe, it, assert = describe, it, assert
local spec_env = _ENV   -- busted's: finally is looked up in it while a test runs
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"
local U = require "pool_testutil"



local PAGE = tonumber(io.popen("getconf PAGESIZE"):read("l")) or 4096

-- Virtual size and resident size of this process, in bytes.
local function statm()
  local f = assert(io.open("/proc/self/statm"))
  local size, rss = f:read("n", "n")
  f:close()
  return size * PAGE, rss * PAGE
end

local function mib(n) return ("%.1f MiB"):format(n / 2^20) end

-- AddressSanitizer and valgrind keep freed memory in quarantine: the
-- resident size then says nothing about what is live, so RSS checks are left
-- to the plain build (the bound on queued_bytes is checked everywhere).
local RSS_MEANS_LIVE = os.getenv("ASAN_OPTIONS") == nil
  and not (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true)

local function signal(pid, sig) assert(os.execute(("kill -%s %d"):format(sig, pid))) end
-- For finally: the process may be gone by then.
local function resume(pid) os.execute(("kill -CONT %d 2>/dev/null"):format(pid)) end

-- 1 MiB, different for each i, starting with i as 4 digits.
local function payload(i)
  return ("%04d"):format(i) .. string.rep(string.char(65 + i % 26), (1 << 20) - 4)
end

-- Answers "ping", {i, intact} for each payload(i) it receives, and "count"
-- with the number of payloads it has received.
local function checker(m)
  local n = 0
  while true do
    local v = m:receive_blocking()
    if v == "ping" then
      m:send_reply("pong")
    elseif v == "count" then
      m:send_reply(n)
    else
      n = n + 1
      local i = tonumber(v:sub(1, 4))
      m:send_reply({ i, v == payload(i) })
    end
  end
end

describe("send timeout", function()
  it("a send that waits for room raises Timeout after the timeout and queues nothing of its message", function()
    local w <close> = coproc.WorkerResource(checker):start()
    local m = w.messenger
    m:send_request("ping")
    assert.equal("pong", m:receive_blocking(nil, 60))
    assert.is_nil(m:send_timeout())
    m:set_send_timeout(1)
    assert.equal(1, m:send_timeout())
    assert.equal(0, m:unsent())
    local pid = w:pid()
    signal(pid, "STOP")
    spec_env.finally(function() resume(pid) end)
    local sent, err, elapsed = 0, nil, nil
    for i = 1, 40 do
      local t0 = coproc.now()
      local ok, e = pcall(m.send_request, m, payload(i))
      if not ok then err, elapsed = e, coproc.now() - t0; break end
      sent = i
    end
    assert.is_true(coproc.is(err, coproc.Timeout), tostring(err))
    assert.matches("^send timed out after 1 s: %d+ bytes still unsent, the peer is not reading$", err.message)
    assert.is_true(elapsed >= 0.95 and elapsed < 2.5, "raised after " .. tostring(elapsed) .. " s")
    assert.is_true(sent >= 1 and sent < 40, sent)
    -- the message that raised was neither queued nor counted
    assert.equal(sent + 1, m:requests_sent())      -- the ping, then the data
    assert.equal(sent + 1, m:messages_sent())
    local unsent = m:unsent()
    assert.is_true(unsent > (4 << 20) and unsent <= err.unsent, unsent .. " unsent, " .. err.unsent .. " when raised")
    signal(pid, "CONT")
    -- the worker gets exactly the messages that did not raise, each intact
    for i = 1, sent do assert.same({ i, true }, m:receive_blocking(nil, 60)) end
    m:send_request("count")
    assert.equal(sent, m:receive_blocking(nil, 60))
    assert.equal(0, m:unsent())
  end)

  it("send_close_request and send_error return at once while the peer is stopped", function()
    local w <close> = coproc.WorkerResource(function(m)
      while true do m:receive_blocking() end
    end):start()
    local m = w.messenger
    m:set_send_timeout(0.1)
    local pid = w:pid()
    signal(pid, "STOP")
    spec_env.finally(function() resume(pid) end)
    local big = string.rep("z", 1 << 20)
    local filled = false
    for _ = 1, 60 do
      local ok, e = pcall(m.send_norequest, m, big)
      if not ok then
        assert.is_true(coproc.is(e, coproc.Timeout), tostring(e))
        filled = true
        break
      end
    end
    assert.is_true(filled)
    local before = m:unsent()
    local t0 = coproc.now()
    m:send_error({ message = "host failure" })
    m:send_close_request()
    assert.is_true(coproc.now() - t0 < 0.1)
    assert.is_true(m:unsent() > before)             -- appended, waiting behind the rest
    signal(pid, "CONT")
    m:set_send_timeout(nil)
    assert.is_nil(m:send_timeout())
    assert.has_error(function() m:set_send_timeout(-1) end)
  end)
end)

describe("a worker that closed its connection but runs on", function()
  it("is reported at once, every time", function()
    local w <close> = coproc.WorkerResource(function(m)
      m:send_norequest("closing")
      m:flush()
      m:close()
      local now = require("coproc").now
      local t = now() + 30
      while now() < t do end
    end):start()
    local m = w.messenger
    assert.equal("closing", m:receive_blocking(nil, 60))
    for _ = 1, 5 do
      local t0 = coproc.now()
      local ok, err = pcall(m.receive_blocking, m, nil, 60)
      assert.is_false(ok)
      local dt = coproc.now() - t0
      assert.is_true(dt < 0.5, "took " .. dt .. " s")
      assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
      assert.matches("^worker %d+ closed its connection %(still running; 0 request%(s%) unanswered%)$", err.message)
      assert.equal(w:pid(), err.pid)
      assert.equal(0, err.unanswered)
    end
    assert.is_true(w:is_alive())
    w:close(0)
    assert.is_false(U.pid_exists(w:pid()))
  end)
end)

describe("large frames", function()
  it("a header declaring 500 MiB costs what has arrived, not 500 MiB", function()
    local w <close> = coproc.WorkerResource(function(m)
      -- 500 MiB declared, then 10 bytes of a DATA frame holding a bin32
      require("coproc.core").testing.send_raw(m, "\31\64\0\0" .. "\149\0\192\192\0\198\31\63\255\240")
      m:flush()
      m:receive_blocking()
    end):start()
    local m = w.messenger
    local size0, rss0 = statm()
    assert.is_true(m:pipe_poll(60))
    assert.is_false(m:available())          -- reads the 14 bytes: a frame begun
    local size1, rss1 = statm()
    assert.is_true(size1 - size0 < (4 << 20), "virtual size grew by " .. mib(size1 - size0))
    if RSS_MEANS_LIVE then assert.is_true(rss1 - rss0 < (4 << 20), "resident size grew by " .. mib(rss1 - rss0)) end
    assert.is_true(m:is_connected())
  end)

  it("a real 64 MiB frame arrives intact", function()
    local w <close> = coproc.WorkerResource(function(m)
      m:send_reply(string.rep("0123456789abcdef", m:receive_blocking() // 16))
      m:receive_blocking()
    end):start()
    w.messenger:send_request(64 << 20)
    local s = w.messenger:receive_blocking(nil, 120)
    assert.equal(64 << 20, #s)
    assert.is_true(s == string.rep("0123456789abcdef", 4 << 20))
  end)
end)

-- Floods channel "log" with the integers 1..n when asked on "cmd", then
-- says "done" on "ctl".
local function flooder(m)
  while true do
    local n = m:receive_blocking("cmd")
    if type(n) == "number" then
      for i = 1, n do m:send_norequest(i, "log") end
    else
      m:send_norequest(string.rep("b", 4 << 20), "log")
    end
    m:send_norequest("done", "ctl")
  end
end

describe("the bound on queued bytes", function()
  it("is 64 MiB by default; set_max_queued changes or lifts it", function()
    local w <close> = coproc.WorkerResource(function(m) m:receive_blocking() end):start()
    local m = w.messenger
    assert.equal(64 << 20, m:max_queued())
    assert.equal(0, m:queued_bytes())
    m:set_max_queued(1000)
    assert.equal(1000, m:max_queued())
    m:set_max_queued(nil)
    assert.is_nil(m:max_queued())
    assert.has_error(function() m:set_max_queued(-1) end)
    assert.has_error(function() m:set_max_queued("many") end)
  end)

  it("holds back a flood on an unread channel: bounded memory, the sender slowed, reading lets all through in order", function()
    local N, limit = 100000, 1 << 20
    local w <close> = coproc.WorkerResource(flooder):start()
    local m = w.messenger
    m:set_max_queued(limit)
    collectgarbage()
    collectgarbage()
    local _, rss0 = statm()
    m:send_request(N, "cmd")
    -- waiting for "ctl" would need reading past the bound: a clear error
    local ok, err = pcall(m.receive_blocking, m, "ctl", 60)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.QueueFull), tostring(err))
    assert.matches("^cannot receive on channel 'ctl': channel 'log' holds %d+ unread messages %(%d+%.%d MiB%), "
      .. "over the messenger's limit of 1 MiB: read it or raise the limit with set_max_queued$", err.message)
    assert.equal("log", err.channel)
    assert.equal(limit, err.limit)
    assert.equal(m:queue_size("log"), err.messages)
    assert.is_true(err.bytes > limit)
    assert.is_true(m:queued_bytes() < limit + (1 << 20), m:queued_bytes())
    local _, rss1 = statm()
    -- the flooder is slowed, not killed: it is alive with most of its messages unsent
    assert.is_true(w:is_alive())
    assert.is_true(m:queue_size("log") < N / 4, m:queue_size("log"))
    -- the same error again, at once, without reading
    ok, err = pcall(m.receive_blocking, m, "ctl", 60)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.QueueFull), tostring(err))
    -- reading the channel lets everything through, in order, within the bound
    local peak, most = rss1, 0
    for i = 1, N do
      local v = m:receive_blocking("log", 60)
      if v ~= i then assert.equal(i, v) end
      if i % 10000 == 0 then
        local _, r = statm()
        peak = math.max(peak, r)
        most = math.max(most, m:queued_bytes())
      end
    end
    assert.equal("done", m:receive_blocking("ctl", 60))
    assert.is_true(most < limit + (1 << 20), most)
    if RSS_MEANS_LIVE then assert.is_true(peak - rss0 < (8 << 20), "host grew by " .. mib(peak - rss0)) end
  end)

  it("still takes in a single frame larger than the bound", function()
    local w <close> = coproc.WorkerResource(flooder):start()
    local m = w.messenger
    m:set_max_queued(1 << 20)
    m:send_request("big", "cmd")
    local s = m:receive_blocking("log", 60)
    assert.equal(4 << 20, #s)
    assert.equal("done", m:receive_blocking("ctl", 60))
    assert.equal(0, m:queued_bytes())
  end)

  it("a send that must wait while reading is held back raises QueueFull instead of waiting", function()
    local w <close> = coproc.WorkerResource(flooder):start()
    local m = w.messenger
    m:set_max_queued(1 << 20)
    m:send_request(100000, "cmd")
    local ok, err = pcall(m.receive_blocking, m, "ctl", 60)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.QueueFull), tostring(err))
    -- the worker stops reading too: our output cannot drain
    local pid = w:pid()
    signal(pid, "STOP")
    spec_env.finally(function() resume(pid) end)
    m:set_send_timeout(30)
    local big = string.rep("x", 4 << 20)
    local t0 = coproc.now()
    for _ = 1, 20 do
      ok, err = pcall(m.send_norequest, m, big, "junk")
      if not ok then break end
    end
    assert.is_true(coproc.is(err, coproc.QueueFull), tostring(err))
    assert.matches("^cannot send while the peer is not reading: channel 'log' holds %d+ unread messages", err.message)
    assert.is_true(coproc.now() - t0 < 10)          -- not the 30 s send timeout
    signal(pid, "CONT")
    for i = 1, 100000 do
      local v = m:receive_blocking("log", 60)
      if v ~= i then assert.equal(i, v) end
    end
    assert.equal("done", m:receive_blocking("ctl", 60))
  end)
end)

describe("Ctrl-C in a stock lua5.4", function()
  it("interrupts a blocking receive at the first Ctrl-C and leaves no worker", function()
    local marker, out = os.tmpname(), os.tmpname()
    local script = os.tmpname() .. ".lua"
    spec_env.finally(function() os.remove(marker); os.remove(out); os.remove(script) end)
    os.remove(marker)
    local f = assert(io.open(script, "w"))
    f:write(([[
      local coproc = require "coproc"
      local w <close> = coproc.WorkerResource(function(m)
        while true do m:receive_blocking() end          -- never replies
      end):start()
      local f = assert(io.open(%q, "w"))
      f:write(coproc.getpid(), " ", w:pid(), "\n")
      f:close()
      w.messenger:receive_blocking()                    -- blocks until interrupted
    ]]):format(marker))
    f:close()
    -- Under the sanitizer build the module needs its runtime preloaded.
    local preload = ""
    if os.getenv("ASAN_OPTIONS") then
      local cc = io.popen("cc -print-file-name=libasan.so")
      preload = "LD_PRELOAD=" .. cc:read("l") .. " "
      cc:close()
    end
    assert(os.execute(("(%slua5.4 %q; echo \"status $?\") > %q 2>&1 &"):format(preload, script, out)))
    local host, worker
    assert.is_true(U.eventually(function()
      local m = io.open(marker)
      if not m then return false end
      host, worker = m:read("n", "n")
      m:close()
      return worker ~= nil
    end, 60))
    spec_env.finally(function() if U.pid_exists(host) then os.execute("kill -9 " .. host) end end)
    local t0 = coproc.now()
    signal(host, "INT")
    local text
    assert.is_true(U.eventually(function()
      local o = io.open(out)
      text = o:read("a")
      o:close()
      return text:match("status %d+") ~= nil
    end, 10), "lua5.4 did not exit after one SIGINT")
    local dt = coproc.now() - t0
    assert.matches("interrupted!", text)
    assert.is_nil(text:match("status 0"))
    assert.is_true(dt < 1, "took " .. dt .. " s")
    assert.is_true(U.eventually(function() return not U.pid_exists(worker) end, 5))
  end)
end)
