--- tests/fuzz/make_corpus.lua: writes the seed corpus of the fuzz targets
-- (tests/fuzz/corpus/<target>/seed_*). Run from the repository root with
-- coproc.core on the cpath:  build/coproc-lua tests/fuzz/make_corpus.lua
-- The seeds are committed; rerun only to change them (bytecode seeds are
-- tied to the Lua build's dump format). Inputs found by fuzzing (crashers
-- that were fixed, see scripts/fuzz.sh) sit next to them as found_*.
local core = require "coproc.core"

local root = (arg and arg[1]) or "tests/fuzz/corpus"

local function write(dir, name, bytes)
  local f = assert(io.open(("%s/%s/seed_%s"):format(root, dir, name), "wb"))
  f:write(bytes)
  f:close()
end

local function ext32(t, body) return "\xc9" .. string.pack(">I4", #body) .. string.char(t) .. body end
local function bin32(s) return "\xc6" .. string.pack(">I4", #s) .. s end
local function fn(src, env) return assert(load(src, "=seed", "t", env or _G)) end

-- ---- codec: values of every kind, and malformed ones -------------------

local values = {}
local function value(name, v) values[#values + 1] = { name, core.encode(v) } end
local function raw(name, bytes) values[#values + 1] = { name, bytes } end

value("nil", nil)
value("bools", { true, false })
value("ints", { 0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, 1 << 32, math.maxinteger, math.mininteger })
value("floats", { 0.0, -0.0, 1.5, 1e300, 5e-324, math.huge, -math.huge, 0 / 0 })
value("strings", { "", "a", ("s"):rep(31), ("m"):rep(32), ("l"):rep(300), "bin\0\255" })
value("empty_map", {})
value("empty_array", core.array())
value("array", { 1, 2, 3 })
value("map", { a = 1, b = "two", [3.5] = true, [false] = 0, [-7] = "neg" })
value("holes", { 1, nil, 3 })
value("nested", { a = { b = { c = { 1, { 2, { 3 } } } } }, list = { { x = 1 }, { y = 2 } } })
local shared = { n = 1 }
value("shared", { shared, shared, { inner = shared } })
local cyc = { name = "a" }
cyc.self = cyc
cyc.child = { parent = cyc }
value("cycle", cyc)
local k = {}
k[k] = k
value("table_key_cycle", k)
value("table_keys", { [{}] = 1, [{ 1 }] = 2, [{ x = {} }] = 3 })
local big = {}
for i = 1, 40 do big["k" .. i] = i end
value("map16", big)
local arr = {}
for i = 1, 20 do arr[i] = i * 1.5 end
value("array16", arr)

local up = { 10 }
local closure = fn("local up = ... return function(x) return x + up[1] end")(up)
value("closure", closure)
local pair = fn([[
  local n = 0
  local function inc() n = n + 1 return n end
  local function get() return n end
  return { inc = inc, get = get, outer = function() return get() + 100 end }
]])()
value("shared_upvalues", pair)
value("recursive", fn("local function fact(k) if k <= 1 then return 1 end return k * fact(k - 1) end return fact")())
value("env_function", fn("return function() return string.rep('ab', 2), type(print) end")())
value("nested_protos", fn("return function(a) return function(b) return function(c) return a + b + c end end end")())
value("stripped", load(string.dump(fn("return function() return 1, 'k', 2.5, nil, true end")(), true), "=seed", "b"))
value("names", { string.format, print, math, fn("return function() end")() })
value("globals", { _G, fn("return function() end")() })
local Point = {}
Point.__index = Point
Point.__add = fn("return function(a, b) return a end")()
function Point.len2(p) return p.x * p.x + p.y * p.y end
value("instances", { setmetatable({ x = 3, y = 4 }, Point), setmetatable({ x = 1, y = 1 }, Point) })
value("meta_chain", setmetatable({}, setmetatable({ a = 1 }, { b = 2 })))
value("meta_array", setmetatable({ 1, 2 }, { kind = "list" }))
value("function_key", { [print] = 1, [fn("return function() end")()] = 2 })

raw("msgpack_forms", "\x96\xc4\x03a\0b\xda\x00\x02xy\xca\x3f\xc0\x00\x00\xd0\xfe\xd1\xff\xfe\xcf\xff\xff\xff\xff\xff\xff\xff\xff")
raw("bad_truncated", "\x92\x01")
raw("bad_byte", "\xc1")
raw("bad_trailing", "\x01\x02")
raw("bad_ext_type", "\xd4\x7f\x00")
raw("bad_ref", "\x91\xd6\x01\x00\x00\x00\x05")
raw("bad_nil_key", "\x81\xc0\x01")
raw("bad_nan_key", "\x81\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\x01")
raw("bad_deep", ("\x91"):rep(201) .. "\xc0")
raw("bad_upref", "\xd7\x03\0\0\0\0\0\0\0\1")
raw("bad_not_bytecode", "\xc9\x00\x00\x00\x05\x02\x91\xc4\x02no")
raw("bad_name", ext32(4, "\x92\xa7nomodxx\xc0"))
raw("bad_huge_array", "\xdd\xff\xff\xff\xff")
local dump = string.dump(fn("return function() return 1 end")(), true)
raw("bad_upvalue_names", ext32(2, "\x91" .. bin32(dump:sub(1, -2) .. "\x94" .. ("\x82A"):rep(20))))
-- The constant count of the main function patched to 2^24: walk the dump as
-- bindings/bytecode.c does (varints: 7 bits a byte, the last with bit 7 set).
local function rd(s, i)
  local x = 0
  repeat local b = s:byte(i); i = i + 1; x = (x << 7) | (b & 0x7f) until b & 0x80 ~= 0
  return x, i
end
local i, n = 33, nil
n, i = rd(dump, i); if n > 0 then i = i + n - 1 end -- source
n, i = rd(dump, i); n, i = rd(dump, i); i = i + 3     -- lines, numparams, is_vararg, maxstacksize
n, i = rd(dump, i); i = i + 4 * n                     -- code
local _, j = rd(dump, i)
raw("bad_huge_constants", ext32(2, "\x91" .. bin32(dump:sub(1, i - 1) .. "\x08\x00\x00\x80" .. dump:sub(j))))
raw("bad_meta_not_table", ext32(6, "\x92\x80\x01"))
-- raw bytecode (the target wraps an input starting with 0xc1 in a FUNC)
local g1, g2 = 1, 2
raw("bytecode_stripped", "\xc1" .. string.dump(fn("return function() return 1, 'k', 2.5, nil, true end")(), true))
raw("bytecode_debug", "\xc1" .. string.dump(fn("return function(a, ...) local t = { a } for i = 1, 3 do t[i] = i end return t end")()))
raw("bytecode_upvalues", "\xc1" .. string.dump(function() return g1 + g2 end))
raw("bytecode_protos", "\xc1" .. string.dump(fn("return function() return function() return function() return 0.5 end end end")()))
for i, v in ipairs(values) do write("codec", ("%02d_%s"):format(i, v[1]), v[2]) end

-- ---- frames ---------------------------------------------------------------

local function frame(kind, chan, prio, flags, payload)
  local body = "\x95" .. string.char(kind) .. chan .. prio .. string.char(flags) .. payload
  return string.pack(">I4", #body) .. body
end
local F64 = function(x) return "\xcb" .. string.pack(">d", x) end

local frames = {
  { "data_nil", frame(0, "\xc0", "\xc0", 0, core.encode("hello")) },
  { "request_str_chan", frame(0, "\xa4jobs", F64(5.0), 1, core.encode({ job = "index", priority = 5 })) },
  { "reply_int_chan", frame(0, "\x07", "\x01", 2, core.encode({ 1, 2, 3 })) },
  { "bool_chan_negprio", frame(0, "\xc3", "\xff", 3, "\xc0") },
  { "big_int_chan", frame(0, "\xd3\x00\x00\x00\x01\x00\x00\x00\x00", F64(-1.5), 0, "\x01") },
  { "str8_chan", frame(0, "\xd9\x28" .. ("c"):rep(40), "\xc0", 0, "\x90") },
  { "close", frame(1, "\xc0", "\xc0", 0, "\xc0") },
  { "error", frame(2, "\xc0", "\xc0", 0, core.encode({ message = "boom", traceback = "tb", class = "X" })) },
}
local seq = {}
for i = 1, 6 do seq[i] = frame(0, "\xa1q", F64(6 - i), 1, core.encode(i)) end
frames[#frames + 1] = { "priorities", table.concat(seq) }
frames[#frames + 1] = { "mixed", frames[1][2] .. frames[2][2] .. frames[7][2] .. frames[3][2] .. frames[8][2] }
local bad = {
  { "bad_short", string.pack(">I4", 3) .. "\x95\x00\xc0" },
  { "bad_not_array", string.pack(">I4", 6) .. "\x94\x00\xc0\xc0\x00\xc0" },
  { "bad_kind", frame(3, "\xc0", "\xc0", 0, "\xc0") },
  { "bad_chan", frame(0, "\x90", "\xc0", 0, "\xc0") },
  { "bad_nan", frame(0, "\xc0", F64(0 / 0), 0, "\xc0") },
  { "bad_prio", frame(0, "\xc0", "\xa1x", 0, "\xc0") },
  { "bad_flags", frame(0, "\xc0", "\xc0", 0x80, "\xc0") },
  { "bad_no_payload", string.pack(">I4", 4) .. "\x95\x00\xc0\xc0" },
  { "bad_huge_length", "\x20\x00\x00\x00\x95\x00\xc0\xc0\x00" },
  { "bad_partial", frames[2][2]:sub(1, 9) },
}
for _, b in ipairs(bad) do frames[#frames + 1] = b end
for i, f in ipairs(frames) do
  write("frame", ("%02d_%s"):format(i, f[1]), string.char(3) .. f[2]) -- maximum frame size: the default
  -- messenger options: FIFO off/on, maximum frame 1 MiB, EOF at the end,
  -- and a chunk size that splits frames
  write("messenger", ("%02d_%s"):format(i, f[1]), string.char(0x3e + (i % 2)) .. f[2])
end
write("frame", "30_small_max", string.char(0) .. frames[2][2])
write("messenger", "30_bytewise", string.char(0x0e) .. frames[10][2])
write("messenger", "31_no_eof", string.char(0x76) .. frames[10][2])
write("messenger", "32_fifo", string.char(0x7f) .. frames[9][2])
print(("corpus written to %s: %d codec, %d frame, %d messenger seeds"):format(root, #values, #frames + 1, #frames + 3))
