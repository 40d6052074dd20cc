-- The value codec: core.encode / core.decode (bindings/codec.c).
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

  it("rebinds any _ENV to the receiver's globals", function()
    -- DESIGN: _ENV binds to the target's globals, whatever it was here (a
    -- sandbox table, busted's spec environment).
    local env = setmetatable({ x = 7 }, { __index = _G })
    local f = load("return x, type(print)", "=custom", "t", env)
    local g = rt(f)
    local x, t = g()
    assert.is_nil(x)
    assert.equal("function", t)
    local _, genv = debug.getupvalue(g, 1)
    assert.equal(_G, genv)
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
    finally(function() package.loaded.codec_spec_mod = nil end)
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
    finally(function() _G.codec_spec_global = nil end)
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
    finally(function() package.loaded.codec_spec_cls = nil end)
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
    finally(function() os.remove(data); os.remove(script); rawset(_G, "MARKER", nil) end)
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
