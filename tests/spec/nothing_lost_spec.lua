-- Nothing sent is lost at the end: messages a messenger still holds when it
-- is closed, and a worker's last replies when it calls os.exit, reach the
-- peer before the connection ends; and a wait on nothing returns at once.
local describe, it, assert = describe, it, assert
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"

-- Everything b receives until the connection ends (or 10 s pass).
local function drain(m)
  local got = {}
  while true do
    local ok, v = pcall(m.receive_blocking, m, nil, 10)
    if not ok or v == nil then return got, v end
    got[#got + 1] = v
  end
end

describe("coproc.wait on nothing", function()
  it("returns {} at once, timeout or not", function()
    local t0 = coproc.now()
    assert.same({}, coproc.wait({}))
    assert.same({}, coproc.wait({}, 30))
    assert.is_true(coproc.now() - t0 < 5)
  end)
end)

describe("nothing sent is lost", function()
  it("close() writes what the messenger holds before it closes", function()
    local a, b = coproc.Messenger.new_pair()
    for i = 1, 5 do a:send_norequest(i) end
    a:close()
    assert.same({ 1, 2, 3, 4, 5 }, (drain(b)))
    b:close()
  end)

  it("a worker that sends and closes its end: every message arrives", function()
    local W = coproc.class {}
    function W:run()
      local m = self.messenger
      for i = 1, 5 do m:send_norequest(i) end
      m:close()
    end
    local w <close> = coproc.WorkerResource(W):start()
    assert.same({ 1, 2, 3, 4, 5 }, (drain(w.messenger)))
  end)

  it("a worker's replies sent just before os.exit arrive, then its death", function()
    local w <close> = coproc.WorkerResource(function(m)
      for i = 1, 3 do
        m:receive_blocking()
        m:send_reply(i * 10)
      end
      os.exit(0)
    end):start()
    for i = 1, 5 do w.messenger:send_request(i) end
    local got, err = drain(w.messenger)
    assert.same({ 10, 20, 30 }, got)
    assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
    assert.matches("2 request(s) unanswered", tostring(err), 1, true)
  end)

  it("flush_all(timeout) waits until every messenger has written", function()
    local a, b = coproc.Messenger.new_pair()
    a:send_norequest(("x"):rep(1 << 20))   -- more than the socket takes at once
    assert.is_true(coproc.flush_all(10) ~= false)
    assert.equal(1 << 20, #b:receive_blocking(nil, 10))
    a:close()
    b:close()
  end)
end)
