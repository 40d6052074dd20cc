-- coproc.LazyPool: forks at map time with the "inherit" start method, so fn
-- and items are inherited (never encoded): closures over userdata work.
local describe, it, assert = describe, it, assert
local _ENV = _G   -- shipped code sees real globals, as under coproc-lua
local coproc = require "coproc"
local U = require "pool_testutil"

describe("coproc.LazyPool", function()
  it("is reachable as coproc.LazyPool", function()
    assert.equal(require("coproc.pool").LazyPool, coproc.LazyPool)
    assert.has_error(function() coproc.LazyPool(0) end)
  end)

  it("map inherits fn and items, even values that cannot be sent", function()
    local lp = coproc.LazyPool(2)
    local handle = io.stdout                       -- userdata: EncodeError if sent
    local items = { { f = io.stderr, k = 1 }, { f = io.stdout, k = 2 }, { f = handle, k = 3 } }
    local r = lp:map(function(item) return io.type(item.f) .. item.k .. io.type(handle) end, items)
    assert.same({ "file1file", "file2file", "file3file", n = 3 }, r)
    -- a plain Pool cannot do this
    local pool <close> = coproc.Pool(1)
    local ok, err = pcall(pool.map, pool, function(x) return io.type(x) end, items)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.EncodeError))
  end)

  it("map runs in other processes, in order, any chunksize; workers end with the map", function()
    local lp = coproc.LazyPool(2)
    local host = coproc.getpid()
    local r = lp:map(function(x) return { x * x, require("coproc.core").getpid() } end, U.range(300),
      { chunksize = 7 })
    local pids, n = {}, 0
    for i = 1, 300 do
      assert.equal(i * i, r[i][1])
      assert.are_not.equal(host, r[i][2])
      if not pids[r[i][2]] then n = n + 1 end
      pids[r[i][2]] = true
    end
    assert.is_true(n >= 1 and n <= 2)
    for pid in pairs(pids) do assert.is_false(U.pid_exists(pid)) end
    assert.equal(0, #U.child_states(coproc.getpid()))
  end)

  it("starmap and map_unordered", function()
    local lp = coproc.LazyPool(2)
    assert.same({ 3, 7, n = 2 }, lp:starmap(function(a, b) return a + b end, { { 1, 2 }, { 3, 4 } }))
    local seen, count = {}, 0
    for i, r in lp:map_unordered(function(x) return x + 100 end, U.range(50)) do
      assert.is_nil(seen[i])
      seen[i] = r
      count = count + 1
    end
    assert.equal(50, count)
    for i = 1, 50 do assert.equal(i + 100, seen[i]) end
    assert.equal(0, #U.child_states(coproc.getpid()))
  end)

  it("an error in fn raises WorkerError with the index; a dead worker WorkerDied", function()
    local lp = coproc.LazyPool(2)
    local ok, err = pcall(lp.map, lp, function(x) if x == 9 then error("nine") end return x end, U.range(20))
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError))
    assert.equal(9, err.index)
    assert.matches("nine", err.traceback)
    ok, err = pcall(lp.map, lp, function(x)
      if x == 4 then os.execute("kill -9 " .. require("coproc.core").getpid()) end
      return x
    end, U.range(8), { chunksize = 1 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied))
    assert.equal(0, #U.child_states(coproc.getpid()))
    assert.same({ 1, n = 1 }, lp:map(function(x) return x end, { 1 }))
  end)
end)
