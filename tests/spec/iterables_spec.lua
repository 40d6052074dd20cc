-- Issue #9 item 7: a pool call's items may be any iterable: a list, an
-- iterator function, a generic-for triple, or coproc.iter(...) (which lets
-- options follow); imap and map_unordered read an iterator lazily with
-- bounded memory, and the pool's guarantees hold for iterator jobs.
local describe, it, setup, teardown, assert = describe, it, setup, teardown, assert
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local coproc = require "coproc"
local U = require "pool_testutil"

local SCALE = tonumber(os.getenv("COPROC_TEST_SCALE")) or 1

local function lines_file(n)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  for i = 1, n do f:write("line ", i, "\n") end
  f:close()
  return path
end

-- An iterator over 1..n that counts how far it was read.
local function counter(n)
  local c = { pulled = 0 }
  c.next = function()
    if c.pulled >= n then return nil end
    c.pulled = c.pulled + 1
    return c.pulled
  end
  return c
end

describe("pool items: iterators", function()
  local pool
  setup(function() pool = coproc.Pool(2) end)
  teardown(function() pool:terminate() end)

  it("map takes generic-for triples: ipairs and pairs give the values", function()
    local t = { 10, 20, 30, 40 }
    assert.same({ 11, 21, 31, 41, n = 4 }, pool:map(function(x) return x + 1 end, ipairs(t)))
    local r = pool:map(function(x) return x * 2 end, pairs({ a = 1, b = 2, c = 3 }))
    table.sort(r)
    assert.same({ 2, 4, 6 }, { r[1], r[2], r[3] })
    assert.equal(3, r.n)
    local codes = pool:map(function(c) return c end, utf8.codes("añb"))
    assert.same({ 97, 241, 98, n = 3 }, codes)
  end)

  it("a plain iterator function gives its first value: io.lines, string.gmatch, coroutine.wrap", function()
    local path = lines_file(50)
    local r = pool:map(function(l) return #l end, io.lines(path))
    assert.equal(50, r.n)
    assert.equal(#"line 1", r[1])
    assert.equal(#"line 50", r[50])
    assert.same({ "A", "BB", "C", n = 3 }, pool:map(string.upper, string.gmatch("a bb c", "%S+")))
    local gen = coroutine.wrap(function() for i = 1, 5 do coroutine.yield(i * i) end end)
    assert.same({ 1, 4, 9, 16, 25, n = 5 }, pool:map(function(x) return x end, gen))
    os.remove(path)
  end)

  it("imap and map_unordered read io.lines lazily, in order / each once", function()
    local path = lines_file(300)
    local seen = 0
    for i, v in pool:imap(function(l) return l:upper() end, io.lines(path)) do
      seen = seen + 1
      assert.equal(seen, i)
      assert.equal("LINE " .. i, v)
    end
    assert.equal(300, seen)
    local got, count = {}, 0
    for i, v in pool:map_unordered(function(l) return #l end, io.lines(path)) do
      assert.is_nil(got[i])
      got[i] = v
      count = count + 1
    end
    assert.equal(300, count)
    assert.equal(#"line 300", got[300])
    os.remove(path)
  end)

  it("coproc.iter lets options follow; an options table after a bare iterator is an error", function()
    local path = lines_file(20)
    local r = {}
    for i, v in pool:imap(function(l) return #l end, coproc.iter(io.lines(path)), { chunksize = 3 }) do r[i] = v end
    assert.equal(20, #r)
    local ok, err = pcall(function() return pool:imap(print, io.lines(path), { chunksize = 3 }) end)
    assert.is_false(ok)
    assert.matches("options cannot follow an iterator function", err)
    assert.matches("coproc.iter", err)
    assert.has_error(function() coproc.iter(5) end)
    os.remove(path)
  end)

  it("starmap takes an iterator of argument lists; an empty iterator gives an empty result", function()
    local args = { { 1, 2 }, { 3, 4 }, { 5, nil, n = 2 } }
    local r = pool:starmap(function(a, b) return a + (b or 100) end, ipairs(args))
    assert.same({ 3, 7, 105, n = 3 }, r)
    local empty = pool:map(print, function() return nil end)
    assert.equal(0, empty.n)
    local n = 0
    for _ in pool:imap(print, function() return nil end) do n = n + 1 end
    for _ in pool:map_unordered(print, coproc.iter(ipairs({}))) do n = n + 1 end
    assert.equal(0, n)
  end)

  it("an error raised by the iterator itself comes out of the call; the pool goes on", function()
    local k = 0
    local function bad()
      k = k + 1
      if k == 40 then error("source broke") end
      return k
    end
    local ok, err = pcall(pool.map, pool, function(x) return x end, bad)
    assert.is_false(ok)
    assert.matches("source broke", tostring(err))
    local got = {}
    k = 0
    ok, err = pcall(function()
      for _, v in pool:imap(function(x) return x end, bad) do got[#got + 1] = v end
    end)
    assert.is_false(ok)
    assert.matches("source broke", tostring(err))
    assert.same({ 1, 2, n = 2 }, pool:map(function(x) return x end, { 1, 2 }))
    assert.equal(0, pool:stats().jobs)
  end)

  it("the closing value is closed when the pool is done with the iterator, or the loop is left", function()
    local closed = 0
    local closing = setmetatable({}, { __close = function() closed = closed + 1 end })
    local function triple(n)
      local k = 0
      return function() k = k + 1; if k <= n then return k end end, nil, nil, closing
    end
    pool:map(function(x) return x end, triple(10))
    assert.equal(1, closed)
    for i in pool:imap(function(x) return x end, triple(10000)) do
      if i == 3 then break end
    end
    assert.equal(2, closed)
    assert.equal(0, pool:stats().jobs)
  end)

  it("an error in fn at item k of an iterator: imap yields 1..k-1, then raises with index k", function()
    local c = counter(500)
    local got = {}
    local ok, err = pcall(function()
      for _, v in pool:imap(function(x) if x == 77 then error("seventy-seven") end return -x end, c.next,
        nil, nil) do
        got[#got + 1] = v
      end
    end)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError), tostring(err))
    assert.equal(77, err.index)
    assert.equal(76, #got)
    for i = 1, 76 do assert.equal(-i, got[i]) end
  end)

  it("imap over 10^6 items keeps memory bounded: at most buffersize read ahead", function()
    local N = math.max(1000, math.floor(1e6 * SCALE))
    local BUF = 2000
    local k, yielded, ahead = 0, 0, 0
    local function gen()
      if k >= N then return nil end
      k = k + 1
      if k - yielded > ahead then ahead = k - yielded end
      return k
    end
    collectgarbage()
    local base = collectgarbage("count")
    local peak = base
    local sum = 0
    for i, v in pool:imap(function(x) return x + 1 end, coproc.iter(gen), { buffersize = BUF }) do
      yielded = i
      sum = sum + v
      if i % 4096 == 0 then
        local kb = collectgarbage("count")
        if kb > peak then peak = kb end
      end
    end
    assert.equal(N, yielded)
    assert.equal(N * (N + 1) // 2 + N, sum)
    assert.is_true(ahead <= BUF, "read " .. ahead .. " items ahead of the loop")
    -- a list of 10^6 results would be ~16 MiB; the loop holds a few thousand
    assert.is_true(peak - base < 4096, ("host memory grew by %.0f KiB"):format(peak - base))
    assert.equal(0, pool:stats().jobs)
  end)

  it("map_unordered and imap with a slow first item: results waiting are bounded too", function()
    local c = counter(math.max(200, math.floor(20000 * SCALE)))
    local BUF = 64
    local maxahead, yielded = 0, 0
    local function gen()
      local v = c.next()
      if v and c.pulled - yielded > maxahead then maxahead = c.pulled - yielded end
      return v
    end
    local function f(x)
      if x == 1 then require("pool_testutil").spin(50) end
      return x
    end
    for i in pool:imap(f, coproc.iter(gen), { buffersize = BUF, chunksize = 1 }) do yielded = i end
    assert.is_true(maxahead <= BUF, "read " .. maxahead .. " ahead")
    c = counter(math.max(200, math.floor(20000 * SCALE)))
    maxahead, yielded = 0, 0
    local seen = 0
    for _ in pool:map_unordered(f, coproc.iter(gen), { buffersize = BUF }) do
      seen = seen + 1
      yielded = seen
    end
    assert.equal(c.pulled, seen)
    assert.is_true(maxahead <= BUF, "read " .. maxahead .. " ahead")
  end)

  it("a list with buffersize is read the same way (bounded results for imap)", function()
    local items = U.range(5000)
    local n = 0
    for i, v in pool:imap(function(x) return x * 2 end, items, { buffersize = 100 }) do
      n = n + 1
      assert.equal(2 * i, v)
    end
    assert.equal(5000, n)
  end)
end)

describe("pool items: loops that are not finished", function()
  it("an imap over an iterator dropped without its loop is dropped at the next call; join works", function()
    local pool = coproc.Pool(2)
    local c = counter(1e9)
    local step = pool:imap(function(x) return x end, coproc.iter(c.next), { buffersize = 50 })
    assert.same({ 1, 1 }, { step() })
    assert.same({ 2, 2 }, { step() })
    step = nil -- luacheck: ignore (dropped on purpose)
    collectgarbage()
    collectgarbage()
    assert.same({ 1, n = 1 }, pool:map(function(x) return x end, { 1 }))
    assert.equal(0, pool:stats().jobs)
    assert.is_true(c.pulled <= 50 + 2)   -- buffersize past the two taken
    pool:close()
    pool:join(30)
  end)

  it("join while an iterator loop holds buffersize results says so instead of hanging", function()
    local pool <close> = coproc.Pool(1)
    local c = counter(1e9)
    local step = pool:imap(function(x) return x end, coproc.iter(c.next), { buffersize = 20 })
    assert.equal(1, (step()))
    pool:close()
    local ok, err = pcall(pool.join, pool, 30)
    assert.is_false(ok)
    assert.matches("finish or close that loop first", tostring(err))
    assert.equal(2, (step()))   -- the loop itself goes on
  end)
end)

describe("pool items: iterator jobs keep the fault guarantees", function()
  it("a worker killed at item k of an iterator is blamed for k; retried items are found again", function()
    local pool <close> = coproc.Pool(2, { retries = 1 })
    local marker = os.tmpname()
    os.remove(marker)
    local function die_once(x)
      if x == 150 then
        local f = io.open(marker, "r")
        if f then f:close() else
          io.open(marker, "w"):close()
          os.exit(3, false)
        end
      end
      return x * 10
    end
    local c = counter(400)
    local seen = {}
    for i, v in pool:imap(die_once, c.next) do
      assert.is_nil(seen[i])
      seen[i] = true
      assert.equal(10 * i, v)
    end
    os.remove(marker)
    assert.equal(400, #seen)
    assert.equal(1, pool:stats().deaths)
    -- without retries the culprit is named exactly
    local strict <close> = coproc.Pool(2)
    local ok, err = pcall(strict.map, strict, function(x)
      if x == 321 then os.exit(4, false) end
      return x
    end, counter(600).next)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied), tostring(err))
    assert.equal(321, err.index)
    assert.equal(4, err.exitcode)
    assert.equal(0, U.zombies(coproc.getpid()))
  end)

  it("uneven tasks from an iterator are spread over the workers (work stealing)", function()
    local pool <close> = coproc.Pool(2)
    local function work(ms)
      require("pool_testutil").spin(ms)
      return require("coproc.core").getpid()
    end
    pool:map(work, { 0, 0, 0, 0 })   -- learn the cost
    local costs = {}
    for i = 1, 40 do costs[i] = (i <= 4) and 60 or 1 end
    local pids = {}
    for _, pid in pool:map_unordered(work, ipairs(costs)) do pids[pid] = (pids[pid] or 0) + 1 end
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.equal(2, n)
  end)

  it("LazyPool reads an iterator to the end before it forks", function()
    local lp = coproc.LazyPool(2)
    local handle = io.stdout
    local r = lp:map(function(x) return io.type(handle) .. x end, ipairs({ "a", "b", "c" }))
    assert.same({ "filea", "fileb", "filec", n = 3 }, r)
    local seen = 0
    for i, v in lp:imap(function(x) return x * 2 end, counter(30).next) do
      seen = seen + 1
      assert.equal(2 * i, v)
    end
    assert.equal(30, seen)
  end)
end)
