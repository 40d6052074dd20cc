-- The value codec: core.encode / core.decode (bindings/codec.c).
local describe, it, assert, before_each, after_each = describe, it, assert, before_each, after_each
local spec_env = _ENV   -- busted's: finally is looked up in it while a test runs
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local core = require "coproc.core"
pcall(require, "coproc.errors") -- installs the error factory when present

local encode, decode = core.encode, core.decode

local function rt(v) return decode(encode(v)) end

-- The class name and message of a raised coproc error.
local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.is_table(e)
  local cls = type(e.class) == "table" and e.class.name or e.class
  return cls, tostring(e.message)
end

local function encode_error(v)
  local cls, msg = err_of(encode, v)
  assert.equal("EncodeError", cls)
  return msg
end

local function decode_error(s)
  local cls, msg = err_of(decode, s)
  assert.equal("ProtocolError", cls)
  return msg
end

-- busted gives spec files their own _ENV; code that must see the real
-- globals (as a script's functions do) is loaded with _G as its environment.
local function in_G(src, name) return assert(load(src, "@" .. name, "t", _G))() end

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

describe("codec scalars", function()
  it("keeps nil and booleans", function()
    assert.is_nil(rt(nil))
    assert.is_true(rt(true))
    assert.is_false(rt(false))
    assert.equal("c0", hex(encode(nil)))
    assert.equal("c3", hex(encode(true)))
  end)

  it("keeps integers apart from floats", function()
    for _, n in ipairs { 0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, -32769,
                         1 << 31, -(1 << 31) - 1, 1 << 32, math.maxinteger, math.mininteger } do
      local d = rt(n)
      assert.equal(n, d)
      assert.equal("integer", math.type(d))
    end
    for _, x in ipairs { 0.0, 1.0, -1.0, 1.5, -2.25, 1e300, 5e-324, 2^53, math.huge, -math.huge } do
      local d = rt(x)
      assert.equal(x, d)
      assert.equal("float", math.type(d))
    end
    local nan = rt(0/0)
    assert.is_true(nan ~= nan)
    assert.equal(1 / -0.0, 1 / rt(-0.0)) -- sign of zero survives
  end)

  it("uses the smallest integer form and float64 for every float", function()
    assert.equal("01", hex(encode(1)))
    assert.equal("ff", hex(encode(-1)))
    assert.equal("cc80", hex(encode(128)))
    assert.equal("d3" .. "8000000000000000", hex(encode(math.mininteger)))
    assert.equal("cb3ff0000000000000", hex(encode(1.0)))
    assert.equal("cb3ff8000000000000", hex(encode(1.5)))
  end)

  it("keeps strings binary-safe", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    for _, s in ipairs { "", "a", "a\0b", "\0", all, all:rep(400), ("x"):rep(70000) } do
      assert.equal(s, rt(s))
    end
    assert.equal("a3610062", hex(encode("a\0b")))
  end)

  it("decodes msgpack str and bin to strings, and other number forms", function()
    assert.equal("a\0b", decode("\xc4\x03a\0b"))           -- bin8
    assert.equal("xy", decode("\xda\x00\x02xy"))             -- str16
    assert.equal(1.5, decode("\xca\x3f\xc0\x00\x00"))        -- float32
    assert.equal("float", math.type(decode("\xca\x3f\xc0\x00\x00")))
    assert.equal(-2, decode("\xd0\xfe"))                     -- int8
    assert.equal(-2, decode("\xd1\xff\xfe"))                 -- int16
    assert.equal(65535, decode("\xcd\xff\xff"))              -- uint16
    local big = decode("\xcf\xff\xff\xff\xff\xff\xff\xff\xff") -- uint64 beyond Lua integers
    assert.equal("float", math.type(big))
    assert.is_true(big > 1.8e19)
  end)

  it("sends coproc.null as nil", function()
    assert.equal("c0", hex(encode(core.null)))
    local t = rt({ 1, core.null, 3 })
    assert.equal(1, t[1]); assert.is_nil(t[2]); assert.equal(3, t[3])
  end)
end)

describe("codec tables", function()
  it("sends 1..n sequences as arrays and everything else as maps", function()
    assert.equal("93010203", hex(encode({ 1, 2, 3 })))
    assert.equal("80", hex(encode({})))                       -- empty table: empty map
    assert.equal("81a17801", hex(encode({ x = 1 })))
    local holes = encode({ 1, nil, 3 })                       -- keys 1 and 3: a map
    assert.equal(0x82, holes:byte(1))
    local mixed = rt({ 1, 2, x = "y" })
    assert.same({ 1, 2, x = "y" }, mixed)
    assert.equal(0x83, encode({ 1, 2, x = "y" }):byte(1))
    assert.same({ [0] = "z", "a" }, rt({ [0] = "z", "a" }))
    assert.same({ [1.5] = 1, [true] = 2, [-3] = 3 }, rt({ [1.5] = 1, [true] = 2, [-3] = 3 }))
  end)

  it("handles big maps and arrays (16- and 32-bit headers)", function()
    for _, n in ipairs { 15, 16, 65535, 65536 } do
      local arr, map = {}, {}
      for i = 1, n do arr[i] = i; map["k" .. i] = i end
      local a, m = rt(arr), rt(map)
      assert.equal(n, #a); assert.equal(n, a[n])
      local c = 0
      for k, v in pairs(m) do c = c + 1; assert.equal(k, "k" .. v) end
      assert.equal(n, c)
    end
  end)

  it("keeps nesting", function()
    local v = { a = { b = { c = { 1, { 2, { 3 } } } } }, list = { { x = 1 }, { y = 2 } } }
    assert.same(v, rt(v))
  end)

  it("forces the kind with core.array and core.map", function()
    assert.equal("90", hex(encode(core.array())))
    assert.equal("90", hex(encode(core.array({}))))
    assert.equal("80", hex(encode(core.map())))
    local t = core.map({ 10, 20 })
    assert.equal(0x82, encode(t):byte(1))
    assert.same({ 10, 20 }, decode(encode(t)))
    -- a decoded empty array stays an array when sent on
    assert.equal("90", hex(encode(decode("\x90"))))
    assert.equal("80", hex(encode(decode("\x80"))))
    local msg = encode_error(core.array({ 1, x = 2 }))
    assert.matches("marked as array", msg)
  end)

  it("keeps shared tables shared", function()
    local shared = { n = 1 }
    local v = rt({ shared, shared, { inner = shared } })
    assert.equal(v[1], v[2])
    assert.equal(v[1], v[3].inner)
    v[1].n = 5
    assert.equal(5, v[3].inner.n)
  end)

  it("keeps cycles", function()
    local a = { name = "a" }
    a.self = a
    a.child = { parent = a }
    local d = rt(a)
    assert.equal(d, d.self)
    assert.equal(d, d.child.parent)
    local k = {}
    k[k] = k -- a table as its own key and value
    local dk = rt(k)
    assert.equal(dk, dk[dk])
  end)

  it("keeps many shared tables (past the small seen-set)", function()
    local objs, list = {}, {}
    for i = 1, 100 do objs[i] = { i = i } end
    for i = 1, 300 do list[i] = objs[(i - 1) % 100 + 1] end
    local d = rt(list)
    for i = 1, 300 do assert.equal(d[(i - 1) % 100 + 1], d[i]) end
  end)
end)

describe("codec functions", function()
  it("sends a closure by value with its upvalues", function()
    local base, scale = 10, { k = 3 }
    local f = function(x) return base + x * scale.k end
    local g = rt(f)
    assert.are_not.equal(f, g)
    assert.equal(16, g(2))
  end)

  it("keeps upvalues shared between functions shared", function()
    local n = 0
    local function inc() n = n + 1; return n end
    local function get() return n end
    local p = rt({ inc = inc, get = get })
    assert.equal(1, p.inc())
    assert.equal(2, p.inc())
    assert.equal(2, p.get()) -- the two decoded functions share one variable
    assert.equal(0, n)       -- ... which is not the sender's
    -- shared with a function reached through another function's upvalue
    local function outer() return get() + 100 end
    local q = rt({ outer = outer, inc = inc })
    q.inc(); q.inc(); q.inc()
    assert.equal(103, q.outer())
  end)

  it("handles recursive local functions", function()
    local function fact(k) if k <= 1 then return 1 end return k * fact(k - 1) end
    assert.equal(120, rt(fact)(5))
  end)

  it("binds _ENV to the receiver's globals", function()
    local f = in_G("return function() return string.rep('ab', 2), type(print) end", "codec_env.lua")
    local g = rt(f)
    local a, b = g()
    assert.equal("abab", a)
    assert.equal("function", b)
    local _, env = debug.getupvalue(g, 1)
    assert.equal(_G, env)
    assert.equal(_G, rt(_G))
  end)

  it("copies an _ENV that is not the globals table (more in codec_env_spec)", function()
    local env = setmetatable({ x = 7 }, { __index = _G })
    local f = load("return x, type(print)", "=custom", "t", env)
    local g = rt(f)
    local x, t = g()
    assert.equal(7, x)
    assert.equal("function", t)
    local _, genv = debug.getupvalue(g, 1)
    assert.are_not.equal(env, genv)
    assert.are_not.equal(_G, genv)
  end)

  it("keeps line information for tracebacks", function()
    local f = function() error("boom") end
    local ok, msg = pcall(rt(f))
    assert.is_false(ok)
    assert.matches("codec_spec.lua:%d+: boom", msg)
  end)

  it("sends standard library values and required modules by name", function()
    assert.equal(string.format, rt(string.format))
    assert.equal(print, rt(print))
    assert.equal(pairs, rt(pairs))
    assert.equal(math, rt(math))
    assert.equal(io.write, rt(io.write))
    assert.equal(package.loaded, rt(package.loaded))
    assert.equal(core, rt(core))
    assert.equal(core.encode, rt(core.encode))
    local v = rt({ fmt = string.format, t = table })
    assert.equal(string.format, v.fmt)
    assert.equal(table, v.t)
    local name = encode(string.format)
    assert.matches("string", name, 1, true)
    assert.matches("format", name, 1, true)
  end)

  it("names a module's fields, but sends a script's global functions by value", function()
    package.loaded.codec_spec_mod = { f = function() return "mod" end, data = { 1 } }
    spec_env.finally(function() package.loaded.codec_spec_mod = nil end)
    local m = package.loaded.codec_spec_mod
    assert.equal(m.f, rt(m.f))   -- looked up by name: the same function
    assert.equal(m, rt(m))
    local v = rt({ m.data, m.f })
    assert.equal(m.data, v[1])
    -- plain data (no function or metatable anywhere) is always copied
    local d = rt(m.data)
    assert.are_not.equal(m.data, d)
    assert.same(m.data, d)
    in_G("function codec_spec_global() return 42 end", "codec_global.lua")
    spec_env.finally(function() _G.codec_spec_global = nil end)
    local g = rt(_G.codec_spec_global)
    assert.are_not.equal(_G.codec_spec_global, g) -- by value
    assert.equal(42, g())
  end)

  it("reports a name that cannot be resolved", function()
    package.loaded.codec_spec_gone = { g = function() end }
    local s = encode(package.loaded.codec_spec_gone.g)
    package.loaded.codec_spec_gone = nil
    local msg = decode_error(s)
    assert.matches("cannot resolve 'codec_spec_gone.g'", msg, 1, true)
  end)

  it("sends a class instance with its metatable", function()
    local Point = {}
    Point.__index = Point
    function Point.new(x, y) return setmetatable({ x = x, y = y }, Point) end
    function Point:len2() return self.x * self.x + self.y * self.y end
    Point.__add = function(a, b) return Point.new(a.x + b.x, a.y + b.y) end
    local v = rt({ Point.new(3, 4), Point.new(1, 1) })
    assert.equal(25, v[1]:len2())
    assert.equal(getmetatable(v[1]), getmetatable(v[2])) -- one class on the other side
    local s = v[1] + v[2]
    assert.equal(41, s:len2())
    -- a class reachable by name keeps its identity
    package.loaded.codec_spec_cls = Point
    spec_env.finally(function() package.loaded.codec_spec_cls = nil end)
    local p = rt(Point.new(1, 2))
    assert.equal(Point, getmetatable(p))
  end)
end)

describe("codec encode errors", function()
  it("rejects userdata, naming where it was", function()
    local msg = encode_error({ conn = io.stdout })
    assert.matches("cannot send a userdata", msg, 1, true)
    assert.matches('(at ["conn"])', msg, 1, true)
    msg = encode_error({ a = { { x = io.stderr } } })
    assert.matches('(at ["a"][1]["x"])', msg, 1, true)
    msg = encode_error(io.stdout)
    assert.matches("cannot send a userdata", msg, 1, true)
    local out = io.stdout
    msg = encode_error(function() return out end)
    assert.matches("<upvalue out>", msg, 1, true)
    msg = encode_error({ [io.stdout] = 1 })
    assert.matches("<key>", msg, 1, true)
  end)

  it("rejects coroutines", function()
    local msg = encode_error({ co = coroutine.create(function() end) })
    assert.matches("cannot send a thread", msg, 1, true)
  end)

  it("rejects C functions that have no name", function()
    local msg = encode_error({ it = string.gmatch("a", "a") })
    assert.matches("cannot send a C function", msg, 1, true)
    assert.matches('["it"]', msg, 1, true)
    encode_error(coroutine.wrap(function() end))
  end)

  it("limits nesting depth", function()
    local function chain(n)
      local t = {}
      for _ = 2, n do t = { t } end
      return t
    end
    local ok = chain(200)
    local d = rt(ok)
    for _ = 1, 199 do d = d[1] end
    assert.same({}, d)
    local msg = encode_error(chain(201))
    assert.matches("nested deeper than 200", msg, 1, true)
    -- a function's payload counts two levels, on both sides alike
    local deep = chain(198)
    local f = function() return deep end
    local g = rt(f)
    assert.equal("table", type(g()))
    local deeper = chain(199)
    encode_error(function() return deeper end)
  end)

  it("leaves the collector as it found it (it is held while a value with names is encoded)", function()
    assert.is_true(collectgarbage("isrunning"))
    encode({ string.format, function() end })
    assert.is_true(collectgarbage("isrunning"))
    collectgarbage("stop")
    encode({ string.format, function() end })
    encode_error({ function() end, io.stdout })
    assert.is_false(collectgarbage("isrunning"))
    collectgarbage("restart")
    encode_error({ function() end, io.stdout })
    assert.is_true(collectgarbage("isrunning"))
  end)

  it("keeps the collector's pace: encoding a function runs no collection step", function()
    -- Restarting a stopped collector resets its debt, so the next
    -- allocation runs a step: once per function encoded, that was a
    -- collection per pool:submit. A minor collection would free `young`.
    local mode = collectgarbage("generational")
    spec_env.finally(function() collectgarbage(mode) end)
    local ballast = {}
    for i = 1, 20000 do ballast[i] = { i } end   -- the next minor collection is 20% of this away
    encode(function() end)                       -- the name index is built (it may hold the collector)
    collectgarbage()
    local young = setmetatable({ {} }, { __mode = "v" })
    for _ = 1, 20 do encode(function() return #ballast end) end
    assert.is_table(young[1])
    collectgarbage("step")                       -- a step does collect it
    assert.is_nil(young[1])
  end)

  it("leaves nothing behind after a failure", function()
    encode_error({ 1, 2, { io.stdout } })
    assert.equal("93010203", hex(encode({ 1, 2, 3 })))
  end)
end)

describe("codec decode errors", function()
  local function sample()
    local C = {}
    C.__index = C
    function C:m() return self.v end
    local shared = { "s" }
    local n = 0
    local function inc() n = n + 1; return n end
    local function get() return n end
    local t = { 1, 2.5, "str\0", true, shared, shared, inc = inc, get = get,
                obj = setmetatable({ v = 1 }, C), fmt = string.format, big = ("x"):rep(300) }
    t.self = t
    return t
  end

  it("round-trips the sample", function()
    local d = rt(sample())
    assert.equal(d, d.self)
    assert.equal(d[5], d[6])
    d.inc()
    assert.equal(1, d.get())
    assert.equal(1, d.obj:m())
  end)

  it("rejects every truncation cleanly", function()
    local s = encode(sample())
    for i = 0, #s - 1 do
      local ok, e = pcall(decode, s:sub(1, i))
      assert.is_false(ok, "prefix of length " .. i .. " decoded")
      assert.is_table(e)
    end
    assert.matches("empty input", decode_error(""), 1, true)
    assert.matches("truncated", decode_error("\x92\x01"), 1, true)
  end)

  it("rejects malformed input with clear messages", function()
    assert.matches("trailing bytes", decode_error("\x01\x02"), 1, true)
    assert.matches("invalid msgpack byte 0xc1", decode_error("\xc1"), 1, true)
    assert.matches("unknown msgpack ext type", decode_error("\xd4\x7f\x00"), 1, true)
    assert.matches("back-reference", decode_error("\x91\xd6\x01\x00\x00\x00\x05"), 1, true)
    assert.matches("key is nil", decode_error("\x81\xc0\x01"), 1, true)
    assert.matches("key is NaN", decode_error("\x81\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\x01"), 1, true)
    assert.matches("nested deeper", decode_error(("\x91"):rep(300) .. "\xc0"), 1, true)
    assert.matches("truncated", decode_error("\xdd\xff\xff\xff\xff"), 1, true) -- no huge allocation
    assert.matches("truncated", decode_error("\xdf\x7f\xff\xff\xff\x01"), 1, true)
    assert.matches("upvalue reference outside", decode_error("\xd7\x03\0\0\0\0\0\0\0\1"), 1, true)
    assert.matches("cannot load function",
      decode_error("\xc9\x00\x00\x00\x05\x02\x91\xc4\x02no"), 1, true)
  end)

  it("survives random bytes and corrupted plain data", function()
    math.randomseed(12345)
    local plain = encode({ a = { 1, 2, 3, { b = "xyz", c = 1.5 } }, d = ("q"):rep(40), [7] = true })
    for _ = 1, 1500 do
      local n = math.random(0, 40)
      local b = {}
      for i = 1, n do b[i] = string.char(math.random(0, 255)) end
      local ok, e = pcall(decode, table.concat(b))
      assert.is_true(ok or type(e) == "table")
      -- flip a few bytes of a valid plain encoding (functions excluded:
      -- bytecode is trusted as much as the peer, see docs/protocol.md)
      local s = { plain:byte(1, -1) }
      for _ = 1, math.random(1, 3) do s[math.random(#s)] = math.random(0, 255) end
      ok, e = pcall(decode, string.char(table.unpack(s)))
      assert.is_true(ok or type(e) == "table")
    end
  end)

  it("returns exactly one value, or raises", function()
    assert.equal(1, select("#", decode("\xc0")))
    assert.equal(2, select("#", pcall(decode, "\x93\x01\x02")))
  end)
end)

-- Hand-built payloads (docs/protocol.md, "Extension types").
local function ext32(t, body) return "\xc9" .. string.pack(">I4", #body) .. string.char(t) .. body end
local function bin32(s) return "\xc6" .. string.pack(">I4", #s) .. s end
local function name_of(mod) return ext32(4, "\x92" .. string.char(0xa0 | #mod) .. mod .. "\xc0") end

-- The closure chain of issue #8: f(1) == n + 1.
local function closure_chain(n)
  local f = function(x) return x end
  for _ = 1, n do
    local g = f
    f = function(x) return g(x) + 1 end
  end
  return f
end

-- The same chain as FUNC payloads built by hand, n levels above the innermost
-- function (the encoder would refuse to write the deep ones).
local function closure_payload(n)
  local g
  local inner = ext32(2, "\x91" .. bin32(string.dump(function(x) return x end)))
  local outer = "\x92" .. bin32(string.dump(function(x) return g(x) + 1 end))
  local pieces, len = { inner }, #inner
  for k = n, 1, -1 do
    len = len + #outer
    pieces[k] = "\xc9" .. string.pack(">I4", len) .. "\x02" .. outer
    len = len + 6
  end
  pieces[n + 1] = inner
  return table.concat(pieces)
end

-- The state is still whole: encodes and decodes work, the collector runs.
local function state_ok()
  local a, b, c = "a", "b", "c"
  assert.equal("93010203", hex(encode({ 1, 2, 3 })))
  assert.equal(6, rt(function(x) return x * 2 end)(3))
  assert.same({ x = { 1, 2 } }, rt({ x = { 1, 2 } }))
  collectgarbage()
  collectgarbage()
  assert.equal("abc", a .. b .. c)
end

describe("codec nesting limits", function()
  it("sends closure chains up to the depth limit and calls them on the other side", function()
    for _, n in ipairs { 90, 99 } do
      local f = closure_chain(n)
      local s = encode(f)
      assert.equal(n + 1, decode(s)(1))
      assert.equal(n + 4, decode(s)(4))
      state_ok()
    end
  end)

  it("refuses deeper closure chains with a clean EncodeError (each function is two levels)", function()
    for _, n in ipairs { 100, 150, 199, 200, 201, 10000 } do
      local msg = encode_error(closure_chain(n))
      assert.matches("nested deeper than 200 levels", msg, 1, true)
      assert.matches("<upvalue g>*100", msg, 1, true)
      state_ok()
    end
  end)

  it("decodes hand-built closure chains up to the limit and refuses deeper ones", function()
    assert.equal(100, decode(closure_payload(99))(1))
    for _, n in ipairs { 100, 150, 199, 200, 201, 10000 } do
      assert.matches("nested deeper than 200 levels", decode_error(closure_payload(n)), 1, true)
      state_ok()
    end
  end)

  it("refuses 10,000 nested tables both ways, and the state stays whole", function()
    local t = {}
    for _ = 2, 10000 do t = { t } end
    assert.matches("nested deeper than 200 levels (at [1]*200)", encode_error(t), 1, true)
    state_ok()
    assert.matches("nested deeper", decode_error(("\x91"):rep(10000) .. "\xc0"), 1, true)
    assert.matches("nested deeper", decode_error(("\x81\x01"):rep(10000) .. "\xc0"), 1, true)
    state_ok()
  end)

  it("counts a metatable as two levels, up to the limit", function()
    local function meta_chain(n)
      local t = {}
      for _ = 1, n do t = setmetatable({}, t) end
      return t
    end
    local d = rt(meta_chain(99))
    for _ = 1, 99 do d = getmetatable(d) end
    assert.same({}, d)
    assert.is_nil(getmetatable(d))
    for _, n in ipairs { 100, 150, 10000 } do
      assert.matches("nested deeper than 200 levels", encode_error(meta_chain(n)), 1, true)
      state_ok()
    end
  end)

  it("counts a name as two levels, on both sides alike", function()
    -- whatever the encoder writes, the decoder reads back
    for depth = 195, 200 do
      local t = { string.format, function() end }
      for _ = 2, depth do t = { t } end
      local ok, s = pcall(encode, t)
      if ok then
        local d = decode(s)
        for _ = 2, depth do d = d[1] end
        assert.equal(string.format, d[1])
      else
        assert.matches("nested deeper", s.message, 1, true)
      end
    end
    local t = { string.format, function() end }
    for _ = 2, 199 do t = { t } end
    assert.matches("nested deeper", encode_error(t), 1, true)
  end)
end)

describe("codec trust modes", function()
  local data = { trust = "data" }

  it("decodes plain data alike in both modes", function()
    local v = { 1, 2.5, "s", true, { a = { 1, 2 } }, [7] = false }
    local s = encode(v)
    assert.same(v, decode(s, data))
    assert.same(v, decode(s, { trust = "code" }))
    local shared = { 1 }
    local d = decode(encode({ shared, shared }), data)
    assert.equal(d[1], d[2])
    assert.equal("90", hex(encode(decode("\x90", data))))
  end)

  it("refuses functions, metatables, names and the globals in trust mode 'data'", function()
    local cases = {
      { function() return 1 end, "a function (FUNC) from the peer is refused in trust mode 'data'" },
      { setmetatable({}, { __index = {} }), "a table with a metatable (META) from the peer is refused in trust mode 'data'" },
      { { string.format, function() end }, "a named value (NAME) from the peer is refused in trust mode 'data'" },
    }
    for _, c in ipairs(cases) do
      local s = encode(c[1])
      local cls, msg = err_of(decode, s, data)
      assert.equal("ProtocolError", cls)
      assert.matches(c[2], msg, 1, true)
      assert.is_not_nil(decode(s)) -- code mode takes it
    end
    local cls, msg = err_of(decode, "\xd4\x05\x00", data)
    assert.equal("ProtocolError", cls)
    assert.matches("the globals table (GLOBALS) from the peer is refused in trust mode 'data'", msg, 1, true)
    assert.equal(_G, decode("\xd4\x05\x00"))
    state_ok()
  end)

  it("refuses a name before requiring its module", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local marker = dir .. "/marker"
    local f = assert(io.open(dir .. "/codec_trust_mod.lua", "w"))
    f:write(("local f = io.open(%q, 'w') f:write('loaded') f:close() return { v = 1 }"):format(marker))
    f:close()
    local old = package.path
    package.path = dir .. "/?.lua;" .. old
    spec_env.finally(function()
      package.path = old
      package.loaded.codec_trust_mod = nil
      os.remove(marker); os.remove(dir .. "/codec_trust_mod.lua"); os.remove(dir)
    end)
    local name = name_of("codec_trust_mod")
    local cls, msg = err_of(decode, name, data)
    assert.equal("ProtocolError", cls)
    assert.matches("named value (NAME)", msg, 1, true)
    assert.is_nil(io.open(marker))
    assert.is_nil(package.loaded.codec_trust_mod)
    assert.same({ v = 1 }, decode(name)) -- code mode requires it
    assert.is_not_nil(io.open(marker))
  end)

  it("checks its options", function()
    assert.has_error(function() decode("\xc0", { trust = "all" }) end,
      "unknown trust mode 'all' (expected 'code' or 'data')")
    assert.has_error(function() decode("\xc0", { trusted = "data" }) end)
    assert.has_error(function() decode("\xc0", "data") end)
    assert.is_nil(decode("\xc0", {}))
  end)
end)

-- Bytecode walking (bindings/bytecode.c): 7-bit groups, most significant first,
-- the last byte with bit 7 set.
local function rd(s, i)
  local x = 0
  repeat
    local b = s:byte(i)
    i = i + 1
    x = (x << 7) | (b & 0x7f)
  until b & 0x80 ~= 0
  return x, i
end

local function wr(x)
  local t = { string.char(0x80 | (x & 0x7f)) }
  x = x >> 7
  while x > 0 do
    table.insert(t, 1, string.char(x & 0x7f))
    x = x >> 7
  end
  return table.concat(t)
end

-- Positions of the instruction count and the constant count of the main
-- function of a dump.
local function counts(bc)
  local i, n = 33, nil           -- after the header (31 bytes) and the upvalue count
  n, i = rd(bc, i)
  if n > 0 then i = i + n - 1 end -- source
  n, i = rd(bc, i)
  n, i = rd(bc, i)               -- line defined, last line defined
  i = i + 3                      -- numparams, is_vararg, maxstacksize
  local code = i
  n, i = rd(bc, i)
  return code, i + 4 * n
end

local function patch(bc, at, value)
  local _, j = rd(bc, at)
  return bc:sub(1, at - 1) .. wr(value) .. bc:sub(j)
end

local function func_of(bc) return ext32(2, "\x91" .. bin32(bc)) end

describe("codec bytecode", function()
  local bc = string.dump(function() return "k1", 2, 3.5, nil, true end, true)

  it("loads the dump of every kind of function", function()
    local up = 5
    local long = ("L"):rep(100)
    local function f(a, ...)
      local t = { nil, false, true, 1, -2, 2.5, "short", long, math.maxinteger }
      local function g(y) return function(z) return y + z + up end end
      return g(a)(select("#", ...)), t
    end
    local d = rt(f)
    local n, t = d(1, "x", "y")
    assert.equal(8, n)
    assert.equal(long, t[8])
    assert.equal(math.maxinteger, t[9])
    for _, strip in ipairs { true, false } do
      local s = string.dump(function() return 42 end, strip)
      assert.equal(42, decode(func_of(s))())
    end
  end)

  it("refuses declared sizes past the payload before allocating", function()
    local code, k = counts(bc)
    for _, c in ipairs {
      { patch(bc, code, 1 << 30), "declared 1073741824 instructions but" },
      { patch(bc, k, 1 << 24), "declared 16777216 constants but" },
      { patch(bc, k, 0x7fffffff), "integer overflow in bytecode" },
    } do
      local msg = decode_error(func_of(c[1]))
      assert.matches("cannot load function: " .. c[2], msg, 1, true)
    end
    assert.matches("integer overflow", decode_error(func_of(bc:sub(1, code - 1) .. ("\x7f"):rep(12) .. "\x80")), 1, true)
  end)

  it("keeps the memory of a process small on a patched dump", function()
    local _, k = counts(bc)
    local code = counts(bc)
    local dir = os.tmpname()
    local script = os.tmpname()
    spec_env.finally(function() os.remove(dir); os.remove(script) end)
    local f = assert(io.open(dir, "wb"))
    f:write(bin32(func_of(patch(bc, k, 1 << 24))), bin32(func_of(patch(bc, code, 1 << 30))))
    f:close()
    f = assert(io.open(script, "w"))
    f:write([[
      local core = require "coproc.core"
      local function status(key)
        for l in io.lines("/proc/self/status") do
          local v = l:match("^" .. key .. ":%s*(%d+)")
          if v then return tonumber(v) end
        end
      end
      local fh = assert(io.open(arg[1], "rb"))
      local all = fh:read("a")
      fh:close()
      local hwm, peak = status("VmHWM"), status("VmPeak")
      local i = 1
      while i <= #all do
        local n = string.unpack(">I4", all, i + 1)
        local ok = pcall(core.decode, all:sub(i + 5, i + 4 + n))
        assert(not ok)
        i = i + 5 + n
      end
      print(status("VmHWM") - hwm, status("VmPeak") - peak)
    ]])
    f:close()
    local lua = os.getenv("LUA") or "lua5.4"
    local p = assert(io.popen(("%s %q %q 2>&1"):format(lua, script, dir)))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    local rss, vm = out:match("^(%-?%d+)%s+(%-?%d+)")
    assert.is_not_nil(rss, out)
    assert.is_true(tonumber(rss) < 16 * 1024, "peak RSS grew by " .. rss .. " KiB")
    assert.is_true(tonumber(vm) < 64 * 1024, "peak virtual size grew by " .. vm .. " KiB")
  end)

  it("refuses a dump with more upvalue names than upvalues (Lua 5.4.4's loader writes past them)", function()
    local crafted = bc:sub(1, -2) .. wr(20) .. ("\x82A"):rep(20)
    local msg = decode_error(func_of(crafted))
    assert.matches("cannot load function: 20 upvalue names for 0 upvalues", msg, 1, true)
    -- the main function's closure smaller than its prototype
    local g
    local one = string.dump(function() return g end, true)
    msg = decode_error(ext32(2, "\x92" .. bin32(one:sub(1, 31) .. "\x00" .. one:sub(33)) .. "\xc0"))
    assert.matches("main function has 0 upvalues, its prototype 1", msg, 1, true)
    state_ok()
  end)

  it("refuses every truncation and bytes from another build", function()
    local full = string.dump(function(a) local t = { a, "x" } return function() return t end end)
    assert.is_function(decode(func_of(full)))
    for i = 0, #full - 1 do
      local ok, e = pcall(decode, func_of(full:sub(1, i)))
      assert.is_false(ok, "prefix of length " .. i .. " loaded")
      assert.matches("cannot load function", e.message, 1, true)
    end
    assert.matches("trailing bytes after the bytecode", decode_error(func_of(full .. "\0")), 1, true)
    local other = full:sub(1, 13) .. "\x04" .. full:sub(15) -- lua_Integer of 4 bytes
    assert.matches("not bytecode of this Lua", decode_error(func_of(other)), 1, true)
  end)

  it("survives corrupted function payloads (decoded, never called)", function()
    math.randomseed(4242)
    local up = { 1, 2 }
    local s = encode({ f = function(x) return x + #up end, g = string.format })
    local loaded = 0
    for _ = 1, 3000 do
      local b = { s:byte(1, -1) }
      for _ = 1, math.random(1, 4) do b[math.random(#b)] = math.random(0, 255) end
      local ok, e = pcall(decode, string.char(table.unpack(b)))
      assert.is_true(ok or type(e) == "table")
      if ok then loaded = loaded + 1 end
    end
    assert.is_true(loaded > 0)
    state_ok()
  end)
end)

describe("codec decode_prefix", function()
  local prefix = core.decode_prefix
  local name_gone = name_of("codec_nomodp")

  it("returns every element of a whole array", function()
    local v, bad, err = prefix(encode({ "op", 1, { x = 2 }, false }))
    assert.same({ "op", 1, { x = 2 }, false, n = 4 }, v)
    assert.is_nil(bad)
    assert.is_nil(err)
    v = prefix("\x90")
    assert.same({ n = 0 }, v)
  end)

  it("stops at the element that does not decode", function()
    local s = "\x94\x01\xa1x" .. name_gone .. "\x04"
    local v, bad, err = prefix(s)
    assert.same({ 1, "x", n = 2 }, v)
    assert.equal(3, bad)
    assert.matches("cannot resolve 'codec_nomodp'", err, 1, true)
    v, bad, err = prefix("\x93\x01\x02\xc1")
    assert.same({ 1, 2, n = 2 }, v)
    assert.equal(3, bad)
    assert.matches("invalid msgpack byte 0xc1", err, 1, true)
    v, bad, err = prefix("\x93\x01\x02")
    assert.equal(3, bad)
    assert.matches("truncated", err, 1, true)
    v, bad, err = prefix("\x92\x01\x02\x03")
    assert.same({ 1, 2, n = 2 }, v)
    assert.equal(3, bad)
    assert.matches("trailing bytes", err, 1, true)
  end)

  it("keeps references between elements", function()
    local t = { k = 1 }
    local s = encode({ "h", t, t, { t } })
    local v, bad = prefix(s)
    assert.is_nil(bad)
    assert.equal(v[2], v[3])
    assert.equal(v[2], v[4][1])
    -- the element that fails refers back to an earlier one
    -- {"h", t, {t, 1}, {t, <unresolvable>}}: objects 0 the array, 1 t, 2 {t, 1}
    local head = encode({ "h", t, { t, 1 } })
    local body = "\x94" .. head:sub(2) .. "\x92\xd6\x01\0\0\0\1" .. name_gone
    v, bad = prefix(body)
    assert.equal(4, bad)
    assert.equal(v[2], v[3][1])
    assert.equal(3, v.n)
  end)

  it("takes the trust option", function()
    local v, bad, err = prefix(encode({ 1, function() end, 3 }), { trust = "data" })
    assert.same({ 1, n = 1 }, v)
    assert.equal(2, bad)
    assert.matches("a function (FUNC) from the peer is refused", err, 1, true)
    assert.equal(3, select("#", prefix(encode({ 1, function() end }), { trust = "data" })))
  end)

  it("decodes any other value as a whole, returning nil, 1, message on failure", function()
    assert.same({ a = 1 }, prefix(encode({ a = 1 })))
    assert.equal("s", prefix(encode("s")))
    local v, bad, err = prefix(name_gone)
    assert.is_nil(v)
    assert.equal(1, bad)
    assert.matches("cannot resolve", err, 1, true)
    v, bad, err = prefix("")
    assert.is_nil(v); assert.equal(1, bad); assert.matches("empty input", err, 1, true)
    v, bad = prefix("\xdc\x00")
    assert.is_nil(v); assert.equal(1, bad)
    state_ok()
  end)
end)

describe("codec across processes", function()
  it("decodes and runs a closure in a fresh lua5.4 state", function()
    local payload, get = in_G([[
      local n = 0
      local function inc(k) n = n + (k or 1); return n end
      local function get() return n end
      local Acc = {}
      Acc.__index = Acc
      function Acc:add(x) self.total = self.total + x; return self end
      return {
        inc = inc,
        get = get,
        show = function(x) return string.format("<%s>", tostring(x)) end,
        marker = function() return MARKER end,
        acc = setmetatable({ total = 1 }, Acc),
        fail = function() error("remote boom") end,
        fmt = string.format,
      }, get
    ]], "codec_remote.lua")
    rawset(_G, "MARKER", "parent")
    local data = os.tmpname()
    local script = os.tmpname()
    spec_env.finally(function() os.remove(data); os.remove(script); rawset(_G, "MARKER", nil) end)
    local f = assert(io.open(data, "wb"))
    f:write(encode(payload))
    f:close()
    f = assert(io.open(script, "w"))
    f:write([[
      local core = require "coproc.core"
      local fh = assert(io.open(arg[1], "rb"))
      local v = core.decode(fh:read("a"))
      fh:close()
      MARKER = "child"
      v.inc(); v.inc(5)
      print(v.get())
      print(v.show(42))
      print(v.marker())
      print(v.acc:add(10):add(5).total)
      print(v.fmt == string.format)
      local ok, e = pcall(v.fail)
      print(ok, e)
    ]])
    f:close()
    local lua = os.getenv("LUA") or "lua5.4"
    local p = assert(io.popen(("%s %q %q 2>&1"):format(lua, script, data)))
    local out = p:read("a")
    local okc = p:close()
    assert.is_true(okc, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal("6", lines[1])
    assert.equal("<42>", lines[2])
    assert.equal("child", lines[3])
    assert.equal("16", lines[4])
    assert.equal("true", lines[5])
    assert.matches("^false\t.*codec_remote%.lua:%d+: remote boom", lines[6])
    assert.equal(0, get()) -- the sender's state is untouched
  end)
end)

describe("codec trust across processes", function()
  local coproc = require "coproc"
  local dir, marker, modname = nil, nil, "codec_trust_peer_mod"
  local old_path = package.path

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    marker = dir .. "/marker"
    local f = assert(io.open(dir .. "/" .. modname .. ".lua", "w"))
    f:write(("local f = io.open(%q, 'w') f:write(require('coproc.core').getpid()) f:close() return {}"):format(marker))
    f:close()
    package.path = dir .. "/?.lua;" .. old_path
  end)

  after_each(function()
    package.path = old_path
    package.loaded[modname] = nil
    os.remove(marker)
    os.remove(dir .. "/" .. modname .. ".lua")
    os.remove(dir)
  end)

  local function marker_pid()
    local f = io.open(marker)
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return tonumber(s)
  end

  -- A worker that answers "gc" with a table whose __gc writes the marker,
  -- "name" with a value the host can only get by requiring modname, "bytecode"
  -- with a raw frame carrying crafted bytecode as __gc, anything else by echo.
  local function peer(m, kw)
    local keep = {} -- nothing of ours is collected here: only the host may write the marker
    local function ext32(t, body) return "\xc9" .. string.pack(">I4", #body) .. string.char(t) .. body end
    local function bin32(s) return "\xc6" .. string.pack(">I4", #s) .. s end
    while true do
      local req = m:receive_blocking()
      if req == "gc" then
        local path = kw.marker
        local v = setmetatable({ 1 }, { __gc = function()
          local f = io.open(path, "w")
          f:write(require("coproc.core").getpid())
          f:close()
        end })
        keep[#keep + 1] = v
        m:send_reply(v)
      elseif req == "name" then
        package.loaded[kw.modname] = function() end
        m:send_reply({ mod = package.loaded[kw.modname] })
      elseif req == "bytecode" then
        local bc = string.dump(function() return 1 end, true)
        bc = bc:sub(1, -2) .. string.char(0x80 | 20) .. ("\x82A"):rep(20)
        local payload = ext32(6, "\x92\x80\x81\xa4__gc" .. ext32(2, "\x91" .. bin32(bc)))
        local body = "\x95\x00\xc0\xc0\x02" .. payload
        require("coproc.core").testing.send_raw(m, string.pack(">I4", #body) .. body)
      elseif req == "set_data" then
        m:set_trust("data")
        m:send_reply(m:trust())
      elseif type(req) == "table" and req.call then
        local ok, r = pcall(req.call)
        m:send_reply({ ok, r })
      else
        m:send_reply(req)
      end
    end
  end

  local function ask(w, what)
    w.messenger:send_request(what)
    return w.messenger:receive_blocking(nil, 20)
  end

  local function protocol_error(w, what)
    w.messenger:send_request(what)
    local ok, e = pcall(w.messenger.receive_blocking, w.messenger, nil, 20)
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.ProtocolError), tostring(e))
    return tostring(e.message)
  end

  it("in trust mode 'code' a metatable's __gc from the worker runs in the host", function()
    local w <close> = coproc.WorkerResource(peer):start { marker = marker, modname = modname }
    assert.equal("code", w.messenger:trust())
    local v = ask(w, "gc")
    assert.same({ 1 }, { v[1] })
    v = nil
    collectgarbage(); collectgarbage()
    assert.equal(coproc.core.getpid(), marker_pid())
  end)

  it("in trust mode 'data' the host refuses it, runs nothing, and the connection stays usable", function()
    local w <close> = coproc.WorkerResource(peer, { trust = "data" }):start { marker = marker, modname = modname }
    assert.equal("data", w.messenger:trust())
    local msg = protocol_error(w, "gc")
    assert.matches("a table with a metatable (META) from the peer is refused in trust mode 'data'", msg, 1, true)
    collectgarbage(); collectgarbage()
    assert.is_nil(marker_pid())
    assert.equal("still here", ask(w, "still here"))
    assert.same({ 1, { 2 } }, ask(w, { 1, { 2 } }))
  end)

  it("requires a module the worker names only in trust mode 'code'", function()
    do
      local w <close> = coproc.WorkerResource(peer, { trust = "data" }):start { marker = marker, modname = modname }
      assert.matches("a named value (NAME) from the peer is refused", protocol_error(w, "name"), 1, true)
      assert.is_nil(marker_pid())
      assert.is_nil(package.loaded[modname])
      assert.equal("ok", ask(w, "ok"))
    end
    local w <close> = coproc.WorkerResource(peer):start { marker = marker, modname = modname }
    local v = ask(w, "name")
    assert.equal(package.loaded[modname], v.mod)
    assert.equal(coproc.core.getpid(), marker_pid())
  end)

  it("refuses crafted bytecode in both modes, and the host lives on", function()
    for _, trust in ipairs { "code", "data" } do
      local w <close> = coproc.WorkerResource(peer, { trust = trust }):start { marker = marker, modname = modname }
      local msg = protocol_error(w, "bytecode")
      if trust == "code" then
        assert.matches("cannot load function: 20 upvalue names for 0 upvalues", msg, 1, true)
      else
        assert.matches("a table with a metatable (META) from the peer is refused", msg, 1, true)
      end
      collectgarbage()
      assert.equal("alive", ask(w, "alive"))
    end
  end)

  it("lets a worker put its own end in trust mode 'data'; the host still sends it code", function()
    local w <close> = coproc.WorkerResource(peer):start { marker = marker, modname = modname }
    local n = 41
    assert.same({ true, 42 }, ask(w, { call = function() return n + 1 end }))
    assert.equal("data", ask(w, "set_data"))
    -- the worker now refuses functions; its receive raises, it ends with a WorkerError
    w.messenger:send_request({ call = function() return n end })
    local ok, e = pcall(w.messenger.receive_blocking, w.messenger, nil, 20)
    assert.is_false(ok)
    assert.is_true(coproc.is(e, coproc.WorkerError), tostring(e))
    assert.matches("a function (FUNC) from the peer is refused in trust mode 'data'", tostring(e), 1, true)
  end)

  it("checks the trust options", function()
    assert.has_error(function() coproc.WorkerResource(peer, { trust = "everything" }) end)
    assert.has_error(function() coproc.core.spawn(peer, {}, { trust = 1 }) end,
      "unknown trust mode '1' (expected 'code' or 'data')")
    local w <close> = coproc.WorkerResource(peer):start { marker = marker, modname = modname }
    assert.has_error(function() w.messenger:set_trust("nope") end,
      "unknown trust mode 'nope' (expected 'code' or 'data')")
    w.messenger:set_trust("data")
    assert.equal("data", w.messenger:trust())
    w.messenger:set_trust("code")
    assert.equal("code", w.messenger:trust())
  end)
end)

describe("codec batches", function()
  it("numbers a batch array like a table, so items sharing a table stay apart from it", function()
    local coproc = require "coproc"
    local w <close> = coproc.WorkerResource(function(m)
      while true do
        local d = m:receive_blocking()
        m:send_reply({ same = d[2] == d[3], self = d[2] == d, v = d[3].v, n = #d })
      end
    end):start()
    local t = { v = 7 }
    w.messenger:send_request_slice({ "head" }, { t, t }, 1, 2)
    local r = w.messenger:receive_blocking(nil, 20)
    assert.same({ same = true, self = false, v = 7, n = 3 }, r)
  end)

  it("sends deep closures through a pool", function()
    local coproc = require "coproc"
    local pool = coproc.Pool(2)
    spec_env.finally(function() pool:terminate() end)
    local f = closure_chain(90)
    local r = pool:map(f, { 1, 2, 3 })
    assert.same({ 91, 92, 93 }, { r[1], r[2], r[3] })
    local ok, e = pcall(pool.map, pool, closure_chain(150), { 1 })
    assert.is_false(ok)
    assert.matches("nested deeper than 200", tostring(e), 1, true)
    r = pool:map(function(x) return x + 1 end, { 1, 2 })
    assert.same({ 2, 3 }, { r[1], r[2] })
  end)
end)
