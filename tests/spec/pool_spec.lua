-- coproc.Pool: each call, and each fault (error in fn, worker killed mid-map,
-- cancel, timeouts, priority order seen by the workers, maxtasksperchild,
-- initializer, closures by value, "module.function" names).
local describe, it, setup, teardown, assert = describe, it, setup, teardown, assert
-- Functions shipped to workers must not capture busted's sandbox environment
-- (a table full of userdata): give the rest of the file the real globals,
-- as a script run by coproc-lua has.
local _ENV = _G
local coproc = require "coproc"
local U = require "pool_testutil"

local range = U.range
local getpid = function() return require("coproc.core").getpid() end

describe("coproc.Pool", function()
  local pool
  setup(function() pool = coproc.Pool(2) end)
  teardown(function() pool:terminate() end)

  it("is reachable as coproc.Pool and require 'coproc.pool'", function()
    assert.equal(require("coproc.pool").Pool, coproc.Pool)
    assert.equal(require("coproc.pool").LazyPool, coproc.LazyPool)
    assert.is_function(coproc.WorkerResourcePool)
    assert.equal(2, #pool:pids())
  end)

  it("map returns results in order, nil results kept as holes", function()
    local r = pool:map(function(x) if x % 3 ~= 0 then return x * 2 end end, range(10))
    assert.equal(10, r.n)
    for i = 1, 10 do
      if i % 3 == 0 then assert.is_nil(r[i]) else assert.equal(2 * i, r[i]) end
    end
  end)

  it("map of an empty list", function()
    local r = pool:map(function(x) return x end, {})
    assert.equal(0, r.n)
    assert.is_nil(next(r, "n") )
  end)

  it("map keeps values apart: integers, floats, strings, tables", function()
    local r = pool:map(function(x) return { x, math.type(x), tostring(x) } end, { 1, 1.0, 2 ^ 53 })
    assert.same({ 1, "integer", "1" }, r[1])
    assert.same({ 1.0, "float", "1.0" }, r[2])
    assert.equal("float", r[3][2])
  end)

  it("ships closures by value, upvalues included, and runs them in the workers", function()
    local k, tbl = 10, { bias = 5 }
    local function helper(x) return x + tbl.bias end
    local host = getpid()
    local r = pool:map(function(x) return { helper(x * k), getpid() } end, range(20), { chunksize = 1 })
    for i = 1, 20 do
      assert.equal(i * 10 + 5, r[i][1])
      assert.are_not.equal(host, r[i][2])
    end
  end)

  it("accepts \"module.function\" names required in the worker", function()
    assert.same({ 1, 4, 9, n = 3 }, pool:map("pool_testutil.square", { 1, 2, 3 }))
    assert.same({ 2, 4, n = 2 }, pool:map("pool_testutil.nested.twice", { 1, 2 }))
    assert.same({ "A", "B", n = 2 }, pool:map("string.upper", { "a", "b" }))
    assert.equal(7, pool:apply("pool_testutil.add", 3, 4))
    local ok, err = pcall(pool.map, pool, "no_such_module.fn", { 1 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError))
    assert.matches("cannot resolve", tostring(err))
  end)

  it("starmap unpacks argument lists, nils included", function()
    local r = pool:starmap(function(a, b, c) return tostring(a) .. tostring(b) .. tostring(c) end,
      { { 1, 2, 3 }, { 4, nil, 6, n = 3 }, { "x" } })
    assert.same({ "123", "4nil6", "xnilnil", n = 3 }, r)
  end)

  it("imap yields (index, result) in order and lazily", function()
    local seen = {}
    for i, r in pool:imap(function(x) return x * x end, range(50), { chunksize = 3 }) do
      seen[#seen + 1] = i
      assert.equal(i * i, r)
    end
    assert.same(range(50), seen)
  end)

  it("imap: leaving the loop early drops the rest; the pool goes on", function()
    local n = 0
    for i in pool:imap(U.spin, { 1, 1, 1, 1, 1, 1, 1, 1 }, { chunksize = 1 }) do
      n = n + 1
      if i == 2 then break end
    end
    assert.equal(2, n)
    assert.same({ 1, 2, n = 2 }, pool:map(function(x) return x end, { 1, 2 }))
    assert.equal(0, pool:stats().jobs)
  end)

  it("map_unordered yields every (index, result) once", function()
    local got, count = {}, 0
    for i, r in pool:map_unordered(function(x) return -x end, range(200), { chunksize = 7 }) do
      assert.is_nil(got[i])
      got[i] = r
      count = count + 1
    end
    assert.equal(200, count)
    for i = 1, 200 do assert.equal(-i, got[i]) end
  end)

  it("apply and submit run one call; futures report done/result", function()
    assert.equal(12, pool:apply(function(a, b) return a * b end, 3, 4))
    assert.equal("nil-2", pool:apply(function(a, b) return tostring(a) .. "-" .. b end, nil, 2))
    local f = pool:submit(function(...) return select("#", ...) end, { 1, nil, 3, n = 3 })
    assert.equal(3, f:result(10))
    assert.is_true(f:done())
    assert.is_false(f:cancelled())
    assert.is_nil(f:exception())
    local futs = {}
    for i = 1, 10 do futs[i] = pool:submit(function(x) return x + 1 end, { i }) end
    for i = 1, 10 do assert.equal(i + 1, futs[i]:result()) end
  end)

  it("an error in fn raises WorkerError with the worker traceback and the item index", function()
    local function bad(x)
      if x == 13 then error("unlucky " .. x) end
      return x
    end
    local ok, err = pcall(pool.map, pool, bad, range(30), { chunksize = 4 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError))
    assert.equal(13, err.index)
    assert.matches("unlucky 13", err.message)
    assert.matches("stack traceback", err.traceback)
    assert.matches("pool_spec.lua:%d+", err.traceback)   -- where it failed, in the worker
    assert.is_number(err.pid)
    -- the pool stays usable
    assert.same({ 1, 2, 3, n = 3 }, pool:map(function(x) return x end, { 1, 2, 3 }))
    -- submit: the future raises it
    local f = pool:submit(function() error({ code = 7 }) end)
    local ok2, e2 = pcall(f.result, f)
    assert.is_false(ok2)
    assert.is_true(coproc.is(e2, coproc.WorkerError))
    assert.is_true(coproc.is(f:exception(), coproc.WorkerError))
  end)

  it("imap raises at the failing item, after the results before it", function()
    local got = {}
    local ok, err = pcall(function()
      for _, r in pool:imap(function(x) if x == 6 then error("six") end return x end, range(10), { chunksize = 1 }) do
        got[#got + 1] = r
      end
    end)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError))
    assert.equal(6, err.index)
    assert.same({ 1, 2, 3, 4, 5 }, got)
  end)

  it("an item that cannot be encoded raises EncodeError; the pool goes on", function()
    local ok, err = pcall(pool.map, pool, function(x) return x end, { 1, io.stdout })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.EncodeError))
    assert.same({ 5, n = 1 }, pool:map(function(x) return x end, { 5 }))
  end)

  it("misuse raises at once", function()
    assert.has_error(function() pool:map(42, {}) end)
    assert.has_error(function() pool:map(print, 5) end)
    assert.has_error(function() pool:map(print, {}, { chunksize = 0 }) end)
    assert.has_error(function() coproc.Pool(0) end)
  end)
end)

describe("coproc.Pool faults", function()
  it("a worker killed mid-map fails its tasks with WorkerDied and is replaced", function()
    local pool <close> = coproc.Pool(2)
    local before = pool:pids()
    local function killer(x)
      if x == 7 then os.execute("kill -9 " .. require("coproc.core").getpid()) end
      return x
    end
    local ok, err = pcall(pool.map, pool, killer, range(40), { chunksize = 1 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
    assert.equal(9, err.signal)
    assert.is_true(err.pid == before[1] or err.pid == before[2])
    assert.is_number(err.index)
    assert.equal(1, pool:stats().deaths)
    assert.equal(2, #pool:pids())
    -- usable, with the replacement doing work
    local r = pool:map(function() return require("coproc.core").getpid() end, range(40), { chunksize = 1 })
    local pids = {}
    for i = 1, 40 do pids[r[i]] = true end
    assert.is_nil(pids[err.pid])
    assert.equal(0, U.zombies(coproc.getpid()))
  end)

  it("retries re-run the tasks a dead worker held", function()
    local pool <close> = coproc.Pool(2, { retries = 1 })
    local marker = os.tmpname()
    os.remove(marker)
    local function die_once(x)
      if x == 5 then
        local f = io.open(marker, "r")
        if f then f:close() else
          io.open(marker, "w"):close()
          os.execute("kill -9 " .. require("coproc.core").getpid())
        end
      end
      return x * 10
    end
    local r = pool:map(die_once, range(12), { chunksize = 1 })
    os.remove(marker)
    for i = 1, 12 do assert.equal(10 * i, r[i]) end
    assert.equal(1, pool:stats().deaths)
  end)

  it("a worker killed while idle is replaced; nothing hangs", function()
    local pool <close> = coproc.Pool(1)
    local pid = pool:pids()[1]
    os.execute("kill -9 " .. pid)
    U.wait_dead(pid)     -- SIGKILL lands asynchronously
    local r = pool:map(function(x) return x + 1 end, { 1, 2, 3 })
    assert.same({ 2, 3, 4, n = 3 }, r)
    assert.are_not.equal(pid, pool:pids()[1])
    assert.is_false(U.pid_exists(pid))
  end)

  it("a crashing submit fails its future with WorkerDied", function()
    local pool <close> = coproc.Pool(1)
    local f = pool:submit(function() os.exit(3, false) end)
    local ok, err = pcall(f.result, f, 10)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied))
    assert.equal(3, err.exitcode)
    assert.equal(5, pool:apply(function() return 5 end))
  end)

  it("cancel drops a queued task; a running one cannot be cancelled", function()
    local gate = U.gate()
    local pool <close> = coproc.Pool(1, { prefetch = 1 })
    local running = pool:submit(gate.wait, { "held" })
    local queued = pool:submit(function() return "ran" end)
    assert.is_false(queued:done())
    assert.is_true(queued:cancel())
    assert.is_true(queued:cancelled())
    assert.is_false(queued:cancel())
    local ok, err = pcall(queued.result, queued)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Cancelled))
    U.until_true(function() return running:running() end)   -- the worker has started it
    assert.is_false(running:cancel())
    gate.open()
    local line = running:result(30)
    assert.equal("go", line)
    gate.close()
  end)

  it("result(timeout) raises Timeout and the task goes on; map timeout abandons the map", function()
    local gate = U.gate()
    local pool <close> = coproc.Pool(1)
    local f = pool:submit(gate.wait)
    local ok, err = pcall(f.result, f, 0.05)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Timeout), tostring(err))
    assert.is_false(f:done())
    gate.open()
    assert.equal("go", f:result(30))
    -- a map that cannot finish in time
    ok, err = pcall(pool.map, pool, gate.wait, { 1 }, { timeout = 0.05 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Timeout))
    gate.open()   -- let the abandoned task end
    assert.same({ 3, n = 1 }, pool:map(function(x) return x end, { 3 }))
    gate.close()
  end)

  it("workers run tasks in priority order (lower first, FIFO among equals)", function()
    local one <close> = coproc.Pool(1, { prefetch = 1 })
    local seen, expect = U.priority_order(one)
    assert.same(expect, seen)
  end)

  it("a high-priority submit overtakes a queued low-priority map (default window)", function()
    local pool <close> = coproc.Pool(1)
    local function work(ms)
      _G.count = (_G.count or 0) + 1
      require("pool_testutil").spin(ms)
      return _G.count
    end
    local iter = pool:map_unordered(work, { 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
      2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2 }, { priority = 10, chunksize = 1 })
    local first = { iter() }                     -- the map is running
    local urgent = pool:submit(work, { 0 }, { priority = 0 })
    local pos = urgent:result(30)
    assert.is_true(pos < 20, "urgent task ran as task " .. pos .. " of 41")
    for _ in iter do end
    assert.is_number(first[1])
  end)

  it("maxtasksperchild replaces a worker after that many tasks", function()
    local pool <close> = coproc.Pool(1, { maxtasksperchild = 2 })
    local r = pool:map(function() return require("coproc.core").getpid() end, range(6), { chunksize = 1 })
    local count, distinct = {}, 0
    for i = 1, 6 do
      if not count[r[i]] then distinct = distinct + 1 end
      count[r[i]] = (count[r[i]] or 0) + 1
    end
    assert.equal(3, distinct)
    for _, c in pairs(count) do assert.equal(2, c) end
    assert.equal(3, pool:stats().replaced)
    assert.equal(0, U.zombies(coproc.getpid()))
  end)

  it("initializer runs once per worker with initargs; its failure fails the tasks", function()
    local pool <close> = coproc.Pool(2, {
      initializer = function(a, b) _G.setting = a .. b; _G.inits = (_G.inits or 0) + 1 end,
      initargs = { "x", "y" },
    })
    local r = pool:map(function() return _G.setting .. _G.inits end, range(10), { chunksize = 1 })
    for i = 1, 10 do assert.equal("xy1", r[i]) end
    local bad <close> = coproc.Pool(1, { initializer = function() error("no config") end })
    local ok, err = pcall(bad.map, bad, function(x) return x end, { 1 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError))
    assert.matches("initializer failed", err.message)
    assert.matches("no config", err.message)
  end)

  it("close/join finish submitted work; terminate cancels it; <close> ends the workers", function()
    local pids
    do
      local pool <close> = coproc.Pool(2)
      pids = pool:pids()
      local f = pool:submit(function() return "done" end)
      pool:close()
      assert.has_error(function() pool:submit(print) end)
      pool:join(30)
      assert.equal("done", f:result())
    end
    for _, pid in ipairs(pids) do assert.is_false(U.pid_exists(pid)) end

    local gate = U.gate()
    local pool = coproc.Pool(1, { prefetch = 1 })
    pids = pool:pids()
    pool:submit(gate.wait)
    local f = pool:submit(function() return 1 end)
    pool:terminate()
    local ok, err = pcall(f.result, f)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.Cancelled))
    assert.is_false(U.pid_exists(pids[1]))
    gate.close()
    assert.equal(0, U.zombies(coproc.getpid()))
  end)

  it("progress: silent when stderr is not a TTY; draws on a given stream", function()
    local lua = os.getenv("COPROC_LUA") or "coproc-lua"
    local err = os.tmpname()
    local cmd = ("%q -e 'local c = require \"coproc\"; local p = c.Pool(1); "
      .. "p:map(function(x) return x end, {1,2,3}, {progress = true}); p:terminate()' 2>%s")
      :format(lua, err)
    assert.is_true(os.execute(cmd) == true)
    local f = io.open(err)
    assert.equal("", f:read("a"))
    f:close()
    os.remove(err)
    local out = {}
    local stream = { write = function(_, ...) for _, s in ipairs { ... } do out[#out + 1] = s end end }
    local pool <close> = coproc.Pool(1)
    pool:map(function(x) return x end, range(5), { progress = true, progress_stream = stream })
    local text = table.concat(out)
    assert.matches("5/5 100%%", text)
    assert.matches("it/s", text)
    assert.matches("ETA", text)
  end)
end)
