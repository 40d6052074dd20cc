-- Issue #9 item 9: Pool{method = "inherit"} uses the workers' inherited
-- copy of a function that cannot be sent by value when it existed when the
-- pool was made (else the error says to use LazyPool); LazyPool gains
-- imap and apply.
local describe, it, assert = describe, it, assert
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local coproc = require "coproc"
local U = require "pool_testutil"

local log_handle = io.tmpfile()   -- userdata: cannot be sent by value
local function module_level(x) return io.type(log_handle) .. ":" .. x end
local M = { tagged = function(x) return "M" .. io.type(log_handle) .. x end }

describe("Pool{method = 'inherit'}", function()
  it("a function defined before the pool, that cannot be sent, runs from the inherited copy", function()
    local out = io.tmpfile()
    local function write_it(x) out:write(x, "\n"); return io.type(out) .. x end
    local pool <close> = coproc.Pool(2, { method = "inherit" })
    assert.same({ "file1", "file2", "file3", n = 3 }, pool:map(write_it, { 1, 2, 3 }))
    assert.same({ "file:7", n = 1 }, pool:map(module_level, { 7 }))          -- an upvalue of this file
    assert.equal("Mfile5", pool:apply(M.tagged, 5))                          -- a field of a local table
    for i, v in pool:imap(write_it, { 4, 5 }) do assert.equal("file" .. (i + 3), v) end
    local host = coproc.getpid()
    local pids = pool:map(function() return require("coproc.core").getpid() end, U.range(4))
    for i = 1, 4 do assert.are_not.equal(host, pids[i]) end
  end)

  it("a function made after the pool that cannot be sent: EncodeError saying to use LazyPool", function()
    local pool <close> = coproc.Pool(1, { method = "inherit" })
    local h = io.tmpfile()
    local function later(x) return io.type(h) .. x end
    local ok, err = pcall(pool.map, pool, later, { 1 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.EncodeError), tostring(err))
    assert.matches("coproc.LazyPool", err.message)
    assert.matches("existed when it was made", err.message)
    -- the functions option names more; functions that can be sent still go by value
    local extra = { function(x) return io.type(h) .. "!" .. x end }
    local p2 <close> = coproc.Pool(1, { method = "inherit", functions = extra })
    assert.same({ "file!1", n = 1 }, p2:map(extra[1], { 1 }))
    local k = 1
    local function byvalue(x) return x + k end
    assert.same({ 2, n = 1 }, p2:map(byvalue, { 1 }))
    k = 10
    assert.same({ 11, n = 1 }, p2:map(byvalue, { 1 }))   -- upvalues of the moment of the call
    assert.has_error(function() coproc.Pool(1, { functions = extra }) end,
      "bad option 'functions' to 'Pool' (only with method = \"inherit\")")
  end)

  it("a fresh pool keeps raising the plain EncodeError", function()
    local pool <close> = coproc.Pool(1)
    local ok, err = pcall(pool.map, pool, module_level, { 1 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.EncodeError))
    assert.is_nil(err.message:find("LazyPool", 1, true))
  end)
end)

describe("LazyPool: imap and apply", function()
  it("imap yields (index, result) in order; the workers end with the loop", function()
    local lp = coproc.LazyPool(2)
    local h = io.stdout
    local seen = 0
    for i, v in lp:imap(function(x) return io.type(h) .. x end, U.range(40), { chunksize = 3 }) do
      seen = seen + 1
      assert.equal(seen, i)
      assert.equal("file" .. i, v)
    end
    assert.equal(40, seen)
    assert.equal(0, #U.child_states(coproc.getpid()))
    -- leaving early ends them too
    for i in lp:imap(function(x) return x end, U.range(1000), { chunksize = 1 }) do
      if i == 2 then break end
    end
    assert.equal(0, #U.child_states(coproc.getpid()))
    -- an error at item k: the results before it, then the error
    local got = {}
    local ok, err = pcall(function()
      for _, v in lp:imap(function(x) if x == 5 then error("five") end return x end, U.range(9)) do
        got[#got + 1] = v
      end
    end)
    assert.is_false(ok)
    assert.equal(5, err.index)
    assert.same({ 1, 2, 3, 4 }, got)
    assert.equal(0, #U.child_states(coproc.getpid()))
  end)

  it("apply runs fn(...) in one forked worker that inherits fn and the arguments", function()
    local lp = coproc.LazyPool(4)
    local h = io.stderr
    local r = lp:apply(function(a, f, c) return a .. io.type(f) .. tostring(c) end, "x", h, nil)
    assert.equal("xfilenil", r)
    local pid = lp:apply(function() return require("coproc.core").getpid() end)
    assert.are_not.equal(coproc.getpid(), pid)
    assert.is_false(U.pid_exists(pid))
    local ok, err = pcall(lp.apply, lp, function() error("inside") end)
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerError))
  end)

  it("starmap still works, with an iterator too", function()
    local lp = coproc.LazyPool(2)
    assert.same({ 3, 7, n = 2 }, lp:starmap(function(a, b) return a + b end, ipairs({ { 1, 2 }, { 3, 4 } })))
  end)
end)

describe("a worker that starts workers of its own", function()
  -- The pids of pid's children (/proc/<pid>/task/*/children).
  local function children_of(pid)
    local out = {}
    local p = io.popen("cat /proc/" .. pid .. "/task/*/children 2>/dev/null")
    for c in p:read("a"):gmatch("%d+") do out[#out + 1] = tonumber(c) end
    p:close()
    return out
  end

  for _, how in ipairs { "its copy of the host's pool", "a pool it makes" } do
    it("stops and reaps them when it ends (" .. how .. "): no orphan, no zombie", function()
      local host_pool <close> = coproc.Pool(2)
      assert.same({ 2, n = 1 }, host_pool:map(function(x) return x * 2 end, { 1 }))
      _G.inherit_spec_pool = host_pool
      local own = how == "a pool it makes"
      local w <close> = coproc.WorkerResource(function(m)
        local pool = own and coproc.Pool(2) or _G.inherit_spec_pool
        local r = pool:map(function(x) return x + 1 end, { 1, 2, 3 })
        m:send_reply({ r = r, kids = children_of(coproc.getpid()) })
        -- returns without closing the pool: the worker's end must do it
      end, { method = "inherit" }):start()
      local got = w.messenger:receive_blocking(nil, 30)
      _G.inherit_spec_pool = nil
      assert.same({ 2, 3, 4, n = 3 }, got.r)
      assert.is_true(#got.kids >= 2)
      assert.is_true(w:join(30))
      assert.equal(0, w:exitcode())
      -- The worker reaped them before it ended: none is left, not even as
      -- a zombie handed to pid 1.
      for _, pid in ipairs(got.kids) do
        local f = io.open("/proc/" .. pid .. "/stat")
        local st = f and f:read("a")
        if f then f:close() end
        assert.is_nil(st, "process " .. pid .. " is still there: " .. tostring(st))
      end
      assert.same({ 4, n = 1 }, host_pool:map(function(x) return x * 2 end, { 2 }))  -- the host's pool goes on
    end)
  end
end)
