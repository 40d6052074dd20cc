-- What a Pool worker reports when a task or its function goes wrong: a
-- module that raises while loading shows its own error wherever the name is
-- resolved (a "module.fn" name, an initializer, a module function a closure
-- refers to); error(42) / error(false) read as plain Lua prints them; and a
-- task that sets the standard globals to nil does not take down the loop
-- serving it (lua/coproc/pool_worker.lua, worker.lua, errors.lua).
local describe, it, assert = describe, it, assert
local busted_env = _ENV   -- `finally` is there only while a test runs
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local function finally(f) return busted_env.finally(f) end
local coproc = require "coproc"

-- A scratch directory on package.path (workers take the host's path) with
-- the modules of `mods` (name -> source); removed by `finally`.
local function with_modules(mods)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. dir))
  for name, src in pairs(mods) do
    local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
    f:write(src)
    f:close()
  end
  local old = package.path
  package.path = dir .. "/?.lua;" .. old
  finally(function()
    package.path = old
    for name in pairs(mods) do
      package.loaded[name] = nil
      os.remove(dir .. "/" .. name .. ".lua")
    end
    os.remove(dir)
  end)
end

local function failure_of(pool, fn, items)
  local ok, err = pcall(pool.map, pool, fn, items or { 1 })
  assert.is_false(ok)
  assert.is_true(coproc.is(err, coproc.WorkerError), tostring(err))
  return err, tostring(err)
end

describe("a module that fails to load", function()
  it("shows its own error for a name, an initializer and a closure's module function", function()
    with_modules {
      wkerr_bad = 'error("wkerr_bad fails to load")\n',
      wkerr_syntax = "local x = = 1\n",
      -- Loads in the host (which sets the global), raises in a worker.
      wkerr_late = 'if not WKERR_HOST then error("wkerr_late refuses the worker") end\n'
        .. "return { f = function(x) return x + 1 end }\n",
    }
    local pool <close> = coproc.Pool(1)

    local _, msg = failure_of(pool, "wkerr_bad.f")
    assert.matches("cannot load module 'wkerr_bad' for 'wkerr_bad.f': ", msg, 1, true)
    assert.matches("wkerr_bad.lua:1: wkerr_bad fails to load", msg, 1, true)

    _, msg = failure_of(pool, "wkerr_syntax.f")
    assert.matches("cannot load module 'wkerr_syntax' for 'wkerr_syntax.f': ", msg, 1, true)
    assert.matches("wkerr_syntax.lua:1: unexpected symbol near '='", msg, 1, true)

    -- A module that is not there still says so, in one line, not its path list.
    _, msg = failure_of(pool, "wkerr_none.f")
    assert.matches("cannot resolve function name 'wkerr_none.f' in the worker: module 'wkerr_none' not found",
      msg, 1, true)
    assert.not_matches("no field package.preload", msg, 1, true)

    _G.WKERR_HOST = true
    finally(function() _G.WKERR_HOST = nil end)
    local late = require("wkerr_late").f
    _, msg = failure_of(pool, function(x) return late(x) end)
    assert.matches("cannot load module 'wkerr_late' for 'wkerr_late.f': ", msg, 1, true)
    assert.matches("wkerr_late.lua:1: wkerr_late refuses the worker", msg, 1, true)
    _, msg = failure_of(pool, "wkerr_late.f")
    assert.matches("wkerr_late.lua:1: wkerr_late refuses the worker", msg, 1, true)

    local ipool <close> = coproc.Pool(1, { initializer = "wkerr_bad.init" })
    _, msg = failure_of(ipool, "string.len", { "a" })
    assert.matches("initializer failed: cannot load module 'wkerr_bad' for 'wkerr_bad.init': ", msg, 1, true)
    assert.matches("wkerr_bad.lua:1: wkerr_bad fails to load", msg, 1, true)

    assert.equal(0, pool:stats().deaths)
    assert.same({ 3, n = 1 }, pool:map("string.len", { "abc" }))
  end)
end)

describe("a number or boolean error value", function()
  it("reads as plain Lua prints it; err.value is the value", function()
    local pool <close> = coproc.Pool(1)
    for _, v in ipairs { 42, 2.5, false, true } do
      local err, msg = failure_of(pool, function() error(v) end)
      assert.matches(": " .. tostring(v) .. " (item 1)", msg, 1, true)
      assert.equal(v, err.value)
      assert.equal(math.type(v), math.type(err.value))
      assert.not_matches("error value)", msg, 1, true)
    end
  end)
end)

describe("a task that sets the standard globals to nil", function()
  -- Every global, the library tables too; the task keeps what it needs.
  local function wipe()
    local pairs_, G = pairs, _G
    if not pairs_ then return end   -- an earlier task of this worker wiped them
    local names = {}
    for k in pairs_(G) do names[#names + 1] = k end
    for i = 1, #names do G[names[i]] = nil end
  end

  it("returns its result, and the worker serves the next tasks", function()
    local pool <close> = coproc.Pool(1)
    local pid = pool:pids()[1]
    -- First, while the worker's globals are still there to take `error` from.
    local err, msg = failure_of(pool, function(x)
      local raise = error
      wipe()
      raise({ code = x })
    end, { 7 })
    assert.equal(7, err.value.code)
    assert.matches("{code = 7} (item 1)", msg, 1, true)
    assert.same({ 2, 3, n = 2 }, pool:map(function(x) wipe(); return x + 1 end, { 1, 2 }))
    assert.same({ 10, n = 1 }, pool:map(function(x) return x * 2 end, { 5 }))
    msg = select(2, failure_of(pool, function(x) wipe(); return x.field end))
    assert.matches("attempt to index a number value", msg, 1, true)
    assert.same({ 12, n = 1 }, pool:map(function(x) return x * 2 end, { 6 }))
    assert.equal(0, pool:stats().deaths)
    assert.same({ pid }, pool:pids())
  end)

  it("one global at a time (tostring, type, pcall, string, table, ...)", function()
    local pool <close> = coproc.Pool(1)
    local pid = pool:pids()[1]
    for _, name in ipairs { "tostring", "type", "pcall", "xpcall", "error", "string", "table", "math",
                             "debug", "getmetatable", "setmetatable", "rawget", "pairs", "ipairs",
                             "require", "os", "_G" } do
      local r = pool:map(function(x) local G = _G; G[name] = nil; return x end, { name })
      assert.same({ name, n = 1 }, r)
    end
    assert.same({ 2, n = 1 }, pool:map(function(x) return x + 1 end, { 1 }))
    assert.equal(0, pool:stats().deaths)
    assert.same({ pid }, pool:pids())
  end)
end)

describe("a WorkerResource target (lua/coproc/worker.lua)", function()
  local function error_of(target)
    local w <close> = coproc.WorkerResource(target):start()
    w.messenger:send_request("go")
    local ok, err = pcall(w.messenger.receive_blocking, w.messenger)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError), tostring(err))
    return err, tostring(err)
  end

  it("error(false) and error(42): the value shows and arrives", function()
    local err, msg = error_of(function(m) m:receive_blocking(); error(false) end)
    assert.matches(": false$", msg)
    assert.equal(false, err.value)
    err, msg = error_of(function(m) m:receive_blocking(); error(42) end)
    assert.matches(": 42$", msg)
    assert.equal(42, err.value)
  end)

  it("its error still reaches the host after it set the globals to nil", function()
    local err, msg = error_of(function(m)
      m:receive_blocking()
      local raise, G, pairs_ = error, _G, pairs
      local names = {}
      for k in pairs_(G) do names[#names + 1] = k end
      for i = 1, #names do G[names[i]] = nil end
      raise({ code = 9 })
    end)
    assert.equal(9, err.value.code)
    assert.matches("{code = 9}", msg, 1, true)
  end)
end)
