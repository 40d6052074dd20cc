-- coproc.mpi.Pool: every Pool method over 2 serving ranks (run by
-- tests/mpi.cmake as `mpirun -n 3 coproc-lua -m coproc.mpi busted ...`):
-- map, starmap, imap, map_unordered, apply, submit and futures,
-- apply_async, priorities seen by the ranks, chunksize, timeouts, closures
-- with upvalues, errors with the remote traceback, iterators, and that
-- rank 0 sleeps while it waits.
local describe, it, setup, teardown, assert = describe, it, setup, teardown, assert
local _ENV = _G   -- functions shipped to ranks see the real globals
local coproc = require "coproc"
local U = require "pool_testutil"

local range = U.range
local getpid = function() return require("coproc.core").getpid() end

describe("coproc.mpi.Pool", function()
  local pool
  setup(function() pool = coproc.mpi.Pool() end)
  teardown(function() pool:terminate() end)

  it("has a worker per serving rank, none of them rank 0", function()
    assert.equal(2, #pool:pids())
    assert.equal(0, coproc.mpi.rank())
    assert.equal(3, coproc.mpi.size())
    local r = pool:map(function() return getpid() end, range(8), { chunksize = 1 })
    for i = 1, 8 do assert.are_not.equal(getpid(), r[i]) end
    local states = {}
    for _, info in ipairs(coproc.mpi.ranks()) do states[#states + 1] = info.state end
    assert.same({ "busy", "busy" }, states)
  end)

  it("map returns results in order, nil results kept as holes", function()
    local r = pool:map(function(x) if x % 3 ~= 0 then return x * 2 end end, range(100))
    assert.equal(100, r.n)
    for i = 1, 100 do
      if i % 3 == 0 then assert.is_nil(r[i]) else assert.equal(2 * i, r[i]) end
    end
    assert.equal(0, pool:map(function(x) return x end, {}).n)
  end)

  it("ships closures by value with their upvalues, tables and functions too", function()
    local k, tbl = 10, { bias = 5 }
    local function helper(x) return x + tbl.bias end
    local r = pool:map(function(x) return helper(x * k) end, range(50))
    for i = 1, 50 do assert.equal(i * 10 + 5, r[i]) end
    -- upvalues as they are at each call
    k = 100
    assert.equal(105, pool:map(function(x) return helper(x * k) end, { 1 })[1])
  end)

  it("starmap unpacks argument lists, nils included", function()
    local r = pool:starmap(function(a, b, c) return tostring(a) .. tostring(b) .. tostring(c) end,
      { { 1, 2, 3 }, { 4, nil, 6, n = 3 } })
    assert.same({ "123", "4nil6", n = 2 }, r)
  end)

  it("imap yields in order; map_unordered yields every index once", function()
    local got = {}
    for i, v in pool:imap(function(x) return x * x end, range(30)) do got[#got + 1] = { i, v } end
    for i = 1, 30 do assert.same({ i, i * i }, got[i]) end
    local seen, n = {}, 0
    for i, v in pool:map_unordered(function(x) return -x end, range(30)) do
      assert.equal(-i, v)
      assert.is_nil(seen[i])
      seen[i], n = true, n + 1
    end
    assert.equal(30, n)
  end)

  it("reads an iterator as items", function()
    local i = 0
    local function gen() i = i + 1; if i <= 40 then return i end end
    local r = pool:map(function(x) return x + 1 end, gen)
    assert.equal(40, r.n)
    assert.equal(41, r[40])
  end)

  it("apply, submit and futures, apply_async with a callback", function()
    assert.equal("ababab", pool:apply(string.rep, "ab", 3))
    local f = pool:submit(function(a, b) return a * b end, { 6, 7 })
    assert.equal(42, f:result(30))
    assert.is_true(f:done())
    local got
    local g = pool:apply_async(function(x) return x + 1 end, { 1 }, { callback = function(v) got = v end })
    assert.equal(2, g:get(30))
    assert.equal(2, got)
    local done = coproc.wait({ pool:submit(function() return 1 end), pool:submit(function() return 2 end) }, nil, 30)
    assert.equal(2, #done)
  end)

  it("ranks run tasks in priority order (lower first, FIFO among equals)", function()
    pool:terminate()
    local one <close> = coproc.mpi.Pool(1, { prefetch = 1 })
    local seen, expect = U.priority_order(one)
    assert.same({ 10, 5, 8, 2, 4, 7, 3, 6, 1, 9 }, expect)   -- the contract, spelled out
    assert.same(expect, seen)
    one:terminate()
    pool = coproc.mpi.Pool()
  end)

  it("chunksize: a rank gets whole chunks", function()
    -- each result is the item's place in its batch: batches start at 1
    local r = pool:map(function()
      local item = require("coproc.core").batch_item()
      return item
    end, range(60), { chunksize = 3 })
    local i = 1
    while i <= 60 do
      local j = i
      while j < 60 and r[j + 1] == r[j] + 1 do j = j + 1 end
      assert.equal(1, r[i])
      assert.equal(0, (j - i + 1) % 3)
      i = j + 1
    end
  end)

  it("times out, and stays usable", function()
    local ok, e = pcall(pool.map, pool, U.spin, { 1000, 1000 }, { timeout = 0.3 })
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.Timeout))
    local f = pool:submit(function() return "fine" end)
    assert.equal("fine", f:result(30))
  end)

  it("a task error is a WorkerError naming the rank and the item, with the remote traceback", function()
    local ok, e = pcall(pool.map, pool, function(x)
      if x == 7 then error("bad item " .. x) end
      return x
    end, range(10))
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.WorkerError))
    assert.equal(7, e.index)
    assert.matches("rank %d", e.message)
    assert.matches("bad item 7", e.message)
    assert.matches("stack traceback", e.traceback)
    assert.same({ 1, 2, 3, n = 3 }, pool:map(function(x) return x end, { 1, 2, 3 }))
  end)

  it("an error value that is not a string arrives as err.value", function()
    local ok, e = pcall(pool.apply, pool, function() error({ code = 404 }) end)
    assert.is_false(ok)
    assert.equal(404, e.value.code)
  end)

  it("wait_any, close and join, then the ranks are free again", function()
    local futs = { pool:submit(function() return 1 end), pool:submit(function() return 2 end) }
    local done = pool:wait_any(futs, 30)
    assert.is_true(#done >= 1)
    pool:close()
    assert.has_error(function() pool:map(function(x) return x end, { 1 }) end)
    pool:join(30)
    for _, r in ipairs(coproc.mpi.ranks()) do assert.equal("free", r.state) end
    pool = coproc.mpi.Pool()
  end)

  it("rank 0 sleeps while it waits 2 s for a slow task", function()
    local f = pool:submit(function()
      local t = require("coproc.core").now() + 2
      while require("coproc.core").now() < t do end
      return true
    end)
    local c0, t0 = os.clock(), coproc.now()
    assert.is_true(f:result(30))
    local cpu, wall = os.clock() - c0, coproc.now() - t0
    io.stderr:write(("rank 0 CPU while waiting %.2f s for a task: %.1f ms (%.1f%%)\n"):format(wall, cpu * 1e3,
      100 * cpu / wall))
    assert.is_true(wall >= 1.9)
    assert.is_true(cpu < 0.2 * wall)
  end)
end)
