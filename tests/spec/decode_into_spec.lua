-- core.decode_into (a msgpack array's tail decoded straight into a table)
-- and m:send_reply_slice (a reply encoded from a head and a slice): the
-- pool's reply path, host and worker side.
local describe, it, assert = describe, it, assert
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"
local core = coproc.core

-- An array encoded as the pool's worker sends it: head, then list[lo..hi]
-- with its nils.
local function slice_bytes(head, list, lo, hi)
  local w <close> = coproc.WorkerResource(function(m)
    local a = m:receive_blocking()
    m:send_reply_slice(a[1], a[2], a[3], a[4])
    m:receive_blocking()
  end):start()
  w.messenger:send_request({ head, list, lo, hi })
  return w.messenger:receive_raw(nil, 30)
end

describe("core.decode_into", function()
  it("returns the head and stores the rest at base + index", function()
    local s = core.encode({ 7, 0.5, 3, false, 10, 20, 30 })
    local t = {}
    local a, b, c, d, count = core.decode_into(s, t, 100, 5)
    assert.same({ 7, 0.5, 3, false, 7 }, { a, b, c, d, count })
    assert.same({ [105] = 10, [106] = 20, [107] = 30 }, t)
  end)

  it("decodes only the head without a table, and at most limit elements", function()
    local s = core.encode({ 1, 2, 3, 4, 5 })
    assert.same({ 1, 5 }, { core.decode_into(s, nil, 0, 2) })
    local t = {}
    assert.same({ 1, 2, 5 }, { core.decode_into(s, t, 0, 3, 2) })
    assert.same({ [3] = 3, [4] = 4 }, t)
    assert.same({ 1, 2, 5 }, { core.decode_into(s, {}, 0, 3, 0) })
  end)

  it("pads a short array's head with nils", function()
    local a, b, c, count = core.decode_into(core.encode({ 1 }), {}, 0, 4)
    assert.same({ 1, nil, nil, 1 }, { a, b, c, count })
  end)

  it("keeps nils of a slice in place, and shared tables shared", function()
    local shared = { x = 1 }
    local raw = slice_bytes({ "h" }, { 1, nil, shared, shared, nil }, 1, 5)
    local t = {}
    local h, count = core.decode_into(raw, t, 0, 2)
    assert.equal("h", h)
    assert.equal(6, count)
    assert.equal(1, t[2])
    assert.is_nil(t[3])
    assert.same({ x = 1 }, t[4])
    assert.equal(t[4], t[5])
    assert.is_nil(t[6])
  end)

  it("fails with the element's index and keeps what came before it", function()
    local raw = slice_bytes({ 9 }, { 1, 2, function() end, 4 }, 1, 4)
    local t = {}
    local v, bad, msg = core.decode_into(raw, t, 0, 2, nil, { trust = "data" })
    assert.is_nil(v)
    assert.equal(4, bad)
    assert.matches("refused", msg)
    assert.same({ [2] = 1, [3] = 2 }, t)
    -- the head alone decodes: the refused value is past it
    assert.equal(9, (core.decode_into(raw, nil, 0, 2, nil, { trust = "data" })))
  end)

  it("rejects what is not an array, truncated input and bad arguments", function()
    local v0, bad0, msg0 = core.decode_into(core.encode({ a = 1 }), {}, 0, 2)
    assert.is_nil(v0)
    assert.equal(0, bad0)
    assert.matches("not an array", msg0)
    local s = core.encode({ 1, 2, 3 })
    local v, bad = core.decode_into(s:sub(1, -2), {}, 0, 2)
    assert.is_nil(v)
    assert.equal(3, bad)
    local v2, bad2 = core.decode_into(s .. "\0", {}, 0, 2)
    assert.is_nil(v2)
    assert.equal(4, bad2)
    assert.has_error(function() core.decode_into(s, {}, 0, 0) end)
    assert.has_error(function() core.decode_into(s, {}, 0, 2, -1) end)
    assert.has_error(function() core.decode_into(s, 5, 0, 2) end)
  end)
end)

describe("m:send_reply_slice", function()
  it("sends head[1..#head], list[lo..hi] as one reply", function()
    local w <close> = coproc.WorkerResource(function(m)
      m:receive_blocking()
      m:send_reply_slice({ "a", "b" }, { 10, 20, 30, 40 }, 2, 3)
      m:receive_blocking()
    end):start()
    w.messenger:send_request(1)
    assert.same({ "a", "b", 20, 30 }, w.messenger:receive_blocking(nil, 30))
  end)
end)

describe("Pool results through the reply path", function()
  it("keeps nil results as holes and values as sent", function()
    local pool <close> = coproc.Pool(2)
    local r = pool:map(function(x)
      if x % 3 == 0 then return nil end
      if x % 3 == 1 then return { x } end
      return x * 0.5
    end, { 1, 2, 3, 4, 5, 6, 7 })
    assert.equal(7, r.n)
    assert.same({ 1 }, r[1])
    assert.equal(1.0, r[2])
    assert.is_nil(r[3])
    assert.same({ 4 }, r[4])
    assert.is_nil(r[6])
    assert.same({ 7 }, r[7])
  end)
end)
