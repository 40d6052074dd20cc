-- coproc.mpi.Pool{per_rank = n}: each serving rank runs n local worker
-- processes and relays them (run by tests/mpi.cmake under `mpirun -n 3
-- coproc-lua -m coproc.mpi`). The pool has ranks * n workers; a local
-- worker that dies is named with the item it ran and replaced, as in a
-- local pool, and the job goes on.
local describe, it, setup, teardown, assert = describe, it, setup, teardown, assert
local _ENV = _G
local coproc = require "coproc"
local U = require "pool_testutil"

local range = U.range
local getpid = function() return require("coproc.core").getpid() end

describe("coproc.mpi.Pool{per_rank = 2}", function()
  local pool
  setup(function() pool = coproc.mpi.Pool { per_rank = 2 } end)
  teardown(function() pool:terminate() end)

  it("has ranks * per_rank workers, local processes of the ranks", function()
    assert.equal(4, #pool:pids())
    local ranks = {}
    for _, r in ipairs(coproc.mpi.ranks()) do ranks[r.pid] = true; assert.equal("relay", r.state) end
    local r = pool:map(function() U.spin(20); return getpid() end, range(16), { chunksize = 1 })
    local seen, n = {}, 0
    for i = 1, 16 do
      assert.is_nil(ranks[r[i]])        -- not the rank itself: its local worker
      if not seen[r[i]] then seen[r[i]], n = true, n + 1 end
    end
    assert.equal(4, n)
  end)

  it("map, imap, submit, and priorities go through the relay as they are", function()
    local k = 3
    local r = pool:map(function(x) return x * k end, range(1000))
    for i = 1, 1000 do assert.equal(3 * i, r[i]) end
    local got = {}
    for i, v in pool:imap(function(x) return -x end, range(20)) do got[i] = v end
    assert.equal(-20, got[20])
    assert.equal(7, pool:submit(function(a) return a + 1 end, { 6 }, { priority = -1 }):result(30))
  end)

  it("a task error names the rank's local worker and the item", function()
    local ok, e = pcall(pool.map, pool, function(x) if x == 5 then error("no " .. x) end return x end, range(8))
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.WorkerError))
    assert.equal(5, e.index)
    assert.matches("rank %d, local worker %d+", e.message)
    assert.matches("stack traceback", e.traceback)
  end)

  it("a local worker that dies is named with its item and replaced", function()
    local ok, e = pcall(pool.map, pool, function(x)
      if x == 6 then os.exit(7) end
      return x
    end, range(12), { chunksize = 1 })
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.WorkerDied))
    assert.equal(6, e.index)
    assert.equal(7, e.exitcode)
    assert.matches("rank %d, local worker %d+ .* died %(exit code 7%) while running item 6", e.message)
    assert.equal(1, pool:stats().replaced)
    assert.equal(4, #pool:pids())
    assert.same({ 2, 4, n = 2 }, pool:map(function(x) return 2 * x end, { 1, 2 }))
  end)

  it("gives its ranks back when it ends", function()
    pool:terminate()
    for _, r in ipairs(coproc.mpi.ranks()) do assert.equal("free", r.state) end
    pool = coproc.mpi.Pool { per_rank = 1 }
    assert.equal(2, #pool:pids())
  end)
end)
