-- Pool results at the edges: an item that cannot be sent fails at that
-- item (as a worker's error would), error paths name the user's value, a
-- batch whose results exceed a frame together still comes back, and an
-- items iterator that uses its own pool gets a readable refusal.
local describe, it, assert, setup, teardown = describe, it, assert, setup, teardown
local _ENV = _G
local coproc = require "coproc"

local function numbers(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

describe("coproc.Pool at the edges", function()
  local pool
  setup(function() pool = coproc.Pool(2) end)
  teardown(function() pool:close(); pool:join(30) end)

  it("imap yields every result before an item that cannot be sent, then raises for it", function()
    local items = numbers(50)
    items[30] = io.stdout
    local got = {}
    local ok, e = pcall(function()
      for _, v in pool:imap(function(x) return x * 10 end, items, { chunksize = 5 }) do got[#got + 1] = v / 10 end
    end)
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.EncodeError))
    assert.equal(30, e.index)
    assert.same(numbers(29), got)
    assert.matches("(item 30)", e.message, 1, true)
  end)

  it("map raises the lowest failing item, whether a worker raised it or it could not be sent", function()
    local items = numbers(50)
    items[40] = io.stdout
    -- item 10 fails late (a slow task), after item 40 was found unsendable
    local ok, e = pcall(pool.map, pool, function(x)
      if x == 10 then
        local t = os.clock()
        while os.clock() - t < 0.3 do end
        error("ten")
      end
      return x
    end, items, { chunksize = 1 })
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.WorkerError))
    assert.equal(10, e.index)
    -- and the pool goes on
    local r = pool:map(function(x) return x + 1 end, { 1, 2 })
    assert.equal(2, r[1])
    assert.equal(3, r[2])
  end)

  it("names the path inside the item, not the slot in the batch", function()
    local ok, e = pcall(pool.map, pool, function(x) return x end, { 1, 2, { k = { io.stdout } } })
    assert.is_false(ok)
    assert.equal(3, e.index)
    assert.matches('(at ["k"][1]) (item 3)', e.message, 1, true)
    ok, e = pcall(pool.map, pool, function(x) return x end, { 1, io.stdout })
    assert.is_false(ok)
    assert.not_matches("(at [", e.message, 1, true)
    assert.matches("(item 2)", e.message, 1, true)
    ok, e = pcall(pool.starmap, pool, function(x) return x end, { { 1 }, 5 })
    assert.is_false(ok)
    assert.equal(2, e.index)
    assert.matches("a starmap item must be a table of arguments, not a number (item 2)", e.message, 1, true)
  end)

  it("names the keyword argument that cannot be sent to a worker", function()
    local C = coproc.class { run = function() end }
    local ok, e = pcall(function() return coproc.WorkerResource(C):start { a = { fh = io.stdout } } end)
    assert.is_false(ok)
    assert.matches('(at kwargs["a"]["fh"])', tostring(e), 1, true)
  end)

  it("refuses, readably, an items iterator that uses the pool it feeds", function()
    local i = 0
    local ok, e = pcall(pool.map, pool, function(x) return x end, function()
      i = i + 1
      if i < 4 then return pool:apply(function() return 1 end) end
    end)
    assert.is_false(ok)
    assert.matches("'apply' called from inside an items iterator of the same pool", tostring(e), 1, true)
    assert.equal(2, pool:map(function(x) return x * 2 end, { 1 })[1])
  end)
end)

describe("coproc.Pool max_frame", function()
  it("brings back a batch whose results exceed a frame only together", function()
    local pool <close> = coproc.Pool(1, { max_frame = 1 << 20 })
    local r = pool:map(function(x) return string.rep(string.char(65 + x % 26), 65536) end,
      numbers(100), { chunksize = 100 })
    assert.equal(100, #r)
    for i = 1, 100 do
      assert.equal(65536, #r[i])
      assert.equal(65 + i % 26, r[i]:byte(1))
    end
  end)

  it("fails at the one result over the limit and delivers those before it", function()
    local pool <close> = coproc.Pool(1, { max_frame = 1 << 20 })
    local function f(x) return string.rep("y", x == 37 and (2 << 20) or 65536) end
    local got = 0
    local ok, e = pcall(function()
      for _, v in pool:imap(f, numbers(100), { chunksize = 100 }) do
        assert.equal(65536, #v)
        got = got + 1
      end
    end)
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.EncodeError))
    assert.equal(37, e.index)
    assert.equal(36, got)
    assert.matches("exceeds the maximum frame size of 1048576 bytes (item 37)", e.message, 1, true)
    assert.equal(2, pool:map(function(x) return x + 1 end, { 1 })[1])
  end)

  it("checks its bounds", function()
    local ok, e = pcall(coproc.Pool, 1, { max_frame = 10 })
    assert.is_false(ok)
    assert.matches("bad option 'max_frame' to 'Pool' (64 .. 2^32-1 bytes expected, got 10)", tostring(e), 1, true)
  end)
end)
