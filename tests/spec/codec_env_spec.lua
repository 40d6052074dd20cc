-- A function's _ENV upvalue through the codec (bindings/codec.c,
-- docs/protocol.md "What goes by name, by value, or not at all"): the
-- globals table goes as GLOBALS, any other environment like any upvalue.
local describe, it, assert = describe, it, assert
local spec_env = _ENV -- busted's: finally is looked up in it while a test runs
local _ENV = _G   -- the functions below pick their environment themselves
local core = require "coproc.core"
pcall(require, "coproc.errors") -- installs the error factory when present

local encode, decode = core.encode, core.decode

local function rt(v) return decode(encode(v)) end

local function env_of(f)
  for i = 1, math.huge do
    local name, v = debug.getupvalue(f, i)
    if name == nil then return nil end
    if name == "_ENV" then return v end
  end
end

describe("codec: a function's own _ENV", function()
  it("a local _ENV table goes by value", function()
    local function mk() local _ENV = { K = 7 }; return function() return K end end -- luacheck: ignore 431 113
    local g = mk()
    local h = rt(g)
    assert.equal(7, g())
    assert.equal(7, h())
    assert.are_not.equal(env_of(g), env_of(h))
    assert.are_not.equal(_G, env_of(h))
    assert.same({ K = 7 }, env_of(h))
  end)

  it("a load() environment goes by value, its globals fallback as the receiver's globals", function()
    local env = setmetatable({ x = 7 }, { __index = _G })
    local f = load("return x, type(print), string.rep('ab', 2)", "=custom", "t", env)
    local g = rt(f)
    local x, t, s = g()
    assert.equal(7, x)
    assert.equal("function", t)
    assert.equal("abab", s)
    local genv = env_of(g)
    assert.are_not.equal(env, genv)
    assert.are_not.equal(_G, genv)
    assert.equal(_G, getmetatable(genv).__index)
    assert.is_nil(rawget(genv, "print"))
    -- A plain table environment without the fallback sees no globals.
    local bare = rt(load("return x, print", "=bare", "t", { x = 3 }))
    local bx, bp = bare()
    assert.equal(3, bx)
    assert.is_nil(bp)
  end)

  it("the globals table as _ENV is still the receiver's globals", function()
    local f = assert(load("return function() return type(print) end", "=g", "t", _G))()
    local g = rt(f)
    assert.equal("function", g())
    assert.equal(_G, env_of(g))
  end)

  it("keeps an environment shared between functions, and cycles through it", function()
    local env = { n = 0 }
    local inc = load("n = n + 1; return n", "=inc", "t", env)
    local get = load("return n, me", "=get", "t", env)
    env.me = get
    local v = rt({ inc = inc, get = get, env = env })
    assert.equal(env_of(v.inc), env_of(v.get))
    assert.equal(v.env, env_of(v.inc))
    v.inc(); v.inc()
    local n, me = v.get()
    assert.equal(2, n)
    assert.equal(v.get, me)
    assert.equal(0, env.n) -- the sender's environment is untouched
    -- A local _ENV shared by two closures: one variable, one table.
    -- luacheck: push ignore 431 111 113
    local function mk() local _ENV = { c = 10 }; return function() c = c + 1 end, function() return c end end
    -- luacheck: pop
    local bump, read = mk()
    local w = rt({ bump, read })
    w[1](); w[1]()
    assert.equal(12, w[2]())
    assert.equal(10, read())
  end)

  it("names what in an environment cannot be sent", function()
    local f = load("return out", "=o", "t", { out = io.stdout })
    local ok, e = pcall(encode, f)
    assert.is_false(ok)
    assert.equal("EncodeError", type(e.class) == "table" and e.class.name or e.class)
    assert.matches("cannot send a userdata", tostring(e.message), 1, true)
    assert.matches('<upvalue _ENV>["out"]', tostring(e.message), 1, true)
  end)

  it("trust mode 'data' refuses such a function as any other", function()
    local function mk() local _ENV = { K = 7 }; return function() return K end end -- luacheck: ignore 431 113
    local s = encode(mk())
    local ok, e = pcall(decode, s, { trust = "data" })
    assert.is_false(ok)
    assert.matches("a function (FUNC) from the peer is refused in trust mode 'data'", tostring(e.message), 1, true)
    assert.equal(7, decode(s)())
  end)

  it("runs in a fresh lua5.4 state with that state's globals behind the environment", function()
    local env = setmetatable({ K = 5 }, { __index = _G })
    local f = load("MARK = 'set'; return K, type(string.rep), rawget(_ENV, 'MARK'), rawget(_G, 'MARK')",
      "=remote_env", "t", env)
    local data, script = os.tmpname(), os.tmpname()
    spec_env.finally(function() os.remove(data); os.remove(script) end)
    local fh = assert(io.open(data, "wb"))
    fh:write(encode(f))
    fh:close()
    fh = assert(io.open(script, "w"))
    fh:write([[
      local core = require "coproc.core"
      local fh = assert(io.open(arg[1], "rb"))
      local g = core.decode(fh:read("a"))
      fh:close()
      print(g())
    ]])
    fh:close()
    local lua = os.getenv("LUA") or "lua5.4"
    local p = assert(io.popen(("%s %q %q 2>&1"):format(lua, script, data)))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    assert.equal("5\tfunction\tset\tnil\n", out)
    assert.is_nil(rawget(env, "MARK"))
  end)
end)
