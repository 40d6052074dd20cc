-- Streaming small messages (issue #15 item 3): one pump reads a bounded
-- amount (the rest waits in the socket, which pushes back on the sender),
-- so a receiver slower than its sender queues a bounded number of messages;
-- nothing is lost, doubled or reordered across those bounds, and the end of
-- the connection (EOF, a malformed frame) still comes after every message.
-- Counters, not timings. COPROC_TEST_SCALE shrinks the streams (valgrind).
local describe, it, assert = describe, it, assert
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"
local core = require "coproc.core"

local SCALE = tonumber(os.getenv("COPROC_TEST_SCALE") or "1")
local function n_of(n) return math.max(2000, math.floor(n * SCALE)) end

-- The most integer frames one pump can queue: its byte bound and one read
-- (64 KiB) beyond, over the smallest integer frame (10 bytes: prefix,
-- array, kind, channel, priority, flags, a one-byte integer).
local function pump_frames_bound()
  local a, b = core.messenger_pair(false)
  local bytes = core.testing.queue_stats(a).pump_bytes
  a:close(); b:close()
  return (bytes + (64 << 10)) // 10
end

describe("a stream of small messages", function()
  it("a receiver slower than its sender queues a bounded number of them (2 M integers)", function()
    local n = n_of(2000000)
    local w <close> = coproc.WorkerResource(function(m)
      local testing = require("coproc.core").testing
      local want, x = 1, 0
      while true do
        local v = m:receive_blocking()
        if v == "end" then break end
        if v ~= want then m:send_reply { bad = v, want = want }; return end
        want = want + 1
        for j = 1, 20 do x = x + j end -- slower than the host: the socket fills up
      end
      m:send_reply { count = want - 1, stats = testing.queue_stats(m) }
    end):start()
    local m = w.messenger
    for i = 1, n do m:send_norequest(i) end
    m:send_request("end")
    local r = m:receive_blocking()
    assert.is_nil(r.bad, r.bad and ("got %s where %s was due"):format(r.bad, r.want))
    assert.equal(n, r.count)
    assert.equal(0, r.stats.queued)
    assert.is_true(r.stats.queued_max <= pump_frames_bound(),
      ("the worker queued %d at once (bound %d)"):format(r.stats.queued_max, pump_frames_bound()))
  end)

  it("is received whole through pending/available/receive_available, then the worker's end", function()
    local n = n_of(300000)
    local w <close> = coproc.WorkerResource(function(m, kw)
      for i = 1, kw.n do m:send_norequest(i) end
      m:flush()
      os.exit(0)
    end):start { n = n }
    local m = w.messenger
    local got = 0
    while got < n do
      if not m:pending() then
        -- nothing queued: the socket may still hold frames; available()
        -- reads (one bounded pump) and must see them
        if not m:available() then m:await_available(10) end
      end
      local t = m:receive_available()
      for i = 1, t.n do
        got = got + 1
        if t[i] ~= got then error(("message %d is %s"):format(got, tostring(t[i]))) end
      end
    end
    assert.equal(n, got)
    local ok, err = pcall(m.receive_blocking, m, nil, 10)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
    assert.equal(0, err.exitcode)
  end)

  it("keeps each priority in order across pump bounds", function()
    local n = n_of(300000)
    local w <close> = coproc.WorkerResource(function(m, kw)
      for i = 1, kw.n do m:send_norequest(i, nil, i % 3) end
      m:send_norequest("end", nil, 99)
      m:receive_blocking()
    end):start { n = n }
    local m = w.messenger
    local last, got = { [0] = 0, 0, 0 }, 0
    while true do
      local msg = m:receive_message_blocking(nil, 10)
      if msg.data == "end" then break end
      local k = msg.data % 3
      assert.equal(k, msg.priority)
      if msg.data <= last[k] then error(("priority %d: %d after %d"):format(k, msg.data, last[k])) end
      last[k] = msg.data
      got = got + 1
    end
    assert.equal(n, got)
    m:send_request("bye")
  end)

  it("a malformed frame after a long stream breaks the connection only after every message", function()
    local n = n_of(300000)
    local w <close> = coproc.WorkerResource(function(m, kw)
      for i = 1, kw.n do m:send_norequest(i) end
      require("coproc.core").testing.send_raw(m, "\0\0\0\6\149\9\192\192\0\42") -- unknown kind 9
      m:flush()
      pcall(m.receive_blocking, m)
    end):start { n = n }
    local m = w.messenger
    for i = 1, n do
      local v = m:receive_blocking(nil, 10)
      if v ~= i then error(("message %d is %s"):format(i, tostring(v))) end
    end
    local ok, err = pcall(m.receive_blocking, m, nil, 10)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.ProtocolError), tostring(err))
    assert.matches("unknown frame kind", tostring(err))
  end)
end)
