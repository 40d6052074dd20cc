-- core.forward, a relay's step (the hybrid MPI pools' ranks relay their
-- local workers with it): messages move from one messenger to another as
-- they are, channel, priority and request flags kept, nothing decoded.
local describe, it, assert = describe, it, assert
local _ENV = _G
local coproc = require "coproc"
local core = coproc.core

-- Wait until m holds n messages (coproc.wait returns as soon as one is
-- queued, so take in what arrives with available()).
local function fill(m, n)
  local deadline = coproc.now() + 10
  while m:queue_size() < n and coproc.now() < deadline do m:available() end
  assert.equal(n, m:queue_size())
end

describe("core.forward", function()
  it("moves messages as they are: channel, priority, request counting", function()
    local src <close> = coproc.WorkerResource(function(m)
      m:send_norequest("third", "c", 3)
      m:send_norequest("first", "c", 1)
      m:send_request("second", "c", 2)
      m:send_norequest("plain")
      m:receive_blocking()
    end):start()
    local sink <close> = coproc.WorkerResource(function(m)
      m:receive_blocking("go")
      local got = {}
      for i = 1, 3 do got[i] = m:receive_blocking("c") end
      got[4] = m:receive_blocking()
      got[5] = m:requests_received("c")
      m:send_reply(got)
      m:receive_blocking()
    end):start()
    local from, to = src.messenger, sink.messenger
    fill(from, 4)
    assert.equal(4, core.forward(to, from))
    assert.equal(0, from:queue_size())
    to:send_norequest(true, "go")
    assert.same({ "first", "second", "third", "plain", 1 }, to:receive_blocking(nil, 10))
    assert.equal(1, from:requests_received("c"))
    assert.equal(1, to:requests_sent("c"))
  end)

  it("stops at max_unsent and says when the far side is down", function()
    local w <close> = coproc.WorkerResource(function(m)
      for i = 1, 3 do m:send_norequest(string.rep("x", 100000) .. i) end
      m:receive_blocking()
    end):start()
    local dead <close> = coproc.WorkerResource(function() end):start()
    local from = w.messenger
    fill(from, 3)
    dead:join(10)
    local to = dead.messenger
    local n
    for _ = 1, 100 do
      n = core.forward(to, from)
      if n == nil then break end
      pcall(to.flush, to, 0.1)
    end
    assert.is_nil(n)
  end)

  it("refuses a messenger to itself and closed messengers", function()
    local w <close> = coproc.WorkerResource(function(m) m:receive_blocking() end):start()
    local m = w.messenger
    assert.has_error(function() core.forward(m, m) end)
    assert.has_error(function() core.forward(m, {}) end)
    local other <close> = coproc.WorkerResource(function(x) x:receive_blocking() end):start()
    local o = other.messenger
    other:terminate()
    local ok, e = pcall(core.forward, m, o)
    assert.is_false(ok)
    assert.matches("closed", tostring(e))
  end)
end)
