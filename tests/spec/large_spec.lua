-- Large payloads (docs/design-notes.md, "Large payloads"): strings of 1, 16
-- and 64 MiB round-trip intact both ways (sent straight from the Lua
-- string, received into the block the messenger keeps), inside tables too;
-- frames of growing then shrinking sizes; a frame just under and just over
-- the kept block's cap; the block goes with the connection; max_frame still
-- refuses oversized frames on both sides with a clear error. And malloc:
-- tuned to keep large blocks in coproc-lua and in workers, never in a stock
-- lua5.4 that only requires coproc unless asked (COPROC_MALLOC, tune_malloc).
local describe, it, before_each, after_each, assert = describe, it, before_each, after_each, assert
local spec_env = _ENV   -- busted's: finally is looked up in it while a test runs
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local coproc = require "coproc"
local core = require "coproc.core"

local MIB = 1 << 20
local COPROC_LUA = os.getenv("COPROC_LUA") or "coproc-lua"

local function echo(m)
  while true do m:send_reply(m:receive_blocking()) end
end

-- n bytes that differ from offset to offset with a period (4093, prime)
-- that no chunk size divides: a misplaced or repeated chunk shows.
local function blob(n, seed)
  local unit = {}
  for i = 1, 4093 do unit[i] = string.char((i * 131 + seed * 7) % 256) end
  local u = table.concat(unit)
  return u:rep(n // #u + 1):sub(1, n)
end

-- Equality of large strings without busted printing megabytes.
local function same(a, b, what)
  assert(type(b) == "string", what .. ": got a " .. type(b))
  assert(#a == #b, ("%s: %d bytes came back as %d"):format(what, #a, #b))
  assert(a == b, what .. ": the bytes differ")
end

local kept = core.testing.big_kept

describe("large payloads", function()
  local w
  before_each(function() w = coproc.WorkerResource(echo):start() end)
  after_each(function() w:close() end)

  it("strings of 1, 16 and 64 MiB round-trip intact both ways", function()
    local m = w.messenger
    for _, n in ipairs { 1 * MIB, 16 * MIB, 64 * MIB } do
      local s = blob(n, n // MIB)
      m:send_request(s)
      same(s, m:receive_blocking(), ("%d MiB"):format(n // MIB))
      -- Twice: the second lands in the blocks kept from the first.
      m:send_request(s)
      same(s, m:receive_blocking(), ("%d MiB again"):format(n // MIB))
      assert.is_true(kept(m) >= n)
    end
  end)

  it("large strings inside tables round-trip intact (encoded, not sent in place)", function()
    local m = w.messenger
    local a, b = blob(16 * MIB, 1), blob(3 * MIB, 2)
    m:send_request { a, "between", b, n = 3 }
    local r = m:receive_blocking()
    same(a, r[1], "first")
    assert.equal("between", r[2])
    same(b, r[3], "third")
    assert.equal(3, r.n)
  end)

  it("frames of growing then shrinking sizes arrive intact, the largest block kept", function()
    local m = w.messenger
    local most = 0
    for i, n in ipairs { 300 << 10, 1 * MIB, 5 * MIB, 17 * MIB, 3 * MIB, 257 << 10, 9 * MIB, 1 * MIB, 1000 } do
      local s = blob(n, i)
      m:send_request(s)
      same(s, m:receive_blocking(), ("size %d"):format(n))
      if n > 256 << 10 then most = math.max(most, n) end
      assert.is_true(kept(m) >= most, ("kept %d after %d"):format(kept(m), n))
    end
  end)

  it("a block just under the cap is kept, one just over it is given back", function()
    local m = w.messenger
    assert.equal(0, kept(m, 4 * MIB))
    local under, over = blob(4 * MIB - 1024, 1), blob(4 * MIB + 1024, 2)
    m:send_request(under)
    same(under, m:receive_blocking(), "under the cap")
    local k = kept(m)
    assert.is_true(k > 4 * MIB - 1024 and k <= 4 * MIB, tostring(k))
    m:send_request(over)
    same(over, m:receive_blocking(), "over the cap")
    assert.equal(0, kept(m))
    m:send_request(under)
    same(under, m:receive_blocking(), "under again")
    assert.is_true(kept(m) > 0)
  end)

  it("the kept block goes when the worker is gone", function()
    local gone <close> = coproc.WorkerResource(function(m)
      while true do
        local v = m:receive_blocking()
        if v == "bye" then os.exit(0) end
        m:send_reply(v)
      end
    end):start()
    local m = gone.messenger
    local s = blob(2 * MIB, 3)
    m:send_request(s)
    same(s, m:receive_blocking(), "2 MiB")
    assert.is_true(kept(m) >= 2 * MIB)
    m:send_request("bye")
    local ok, err = pcall(m.receive_blocking, m, { timeout = 30 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.WorkerDied) or coproc.is(err, coproc.ResourceRequestedClose), tostring(err))
    assert.equal(0, kept(m))
  end)

  it("max_frame refuses an oversized string on the sender, and nothing is written", function()
    local m = w.messenger
    m:set_max_frame(1 * MIB)
    local ok, err = pcall(m.send_request, m, blob(2 * MIB, 4))
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.EncodeError), tostring(err))
    assert.matches("exceeds the maximum frame size of 1048576 bytes", tostring(err))
    assert.equal(0, m:unsent())
    m:send_request("still fine")
    assert.equal("still fine", m:receive_blocking())
  end)

  it("max_frame refuses an oversized frame on the receiver with ProtocolError", function()
    local m = w.messenger
    m:send_request("small")
    assert.equal("small", m:receive_blocking())
    m:set_max_frame(1 * MIB)
    m:send_request("x" .. string.rep("y", 512 << 10))   -- the worker's reply is a frame of 512 KiB
    assert.equal(512 * 1024 + 1, #m:receive_blocking())
    local worker = coproc.WorkerResource(function(wm)
      wm:receive_blocking()
      wm:send_reply(string.rep("z", 2 * MIB))
      wm:receive_blocking()
    end):start()
    spec_env.finally(function() worker:close() end)
    worker.messenger:set_max_frame(1 * MIB)
    worker.messenger:send_request("go")
    local ok, err = pcall(worker.messenger.receive_blocking, worker.messenger, { timeout = 30 })
    assert.is_false(ok)
    assert.is_true(coproc.is(err, coproc.ProtocolError), tostring(err))
    assert.matches("maximum frame size", tostring(err))
  end)
end)

-- Runs code under interpreter `lua` with env set, returns its output lines.
local function run(lua, code, env)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local preload = ""
  if lua == "lua5.4" and os.getenv("ASAN_OPTIONS") then
    local cc = io.popen("cc -print-file-name=libasan.so")
    preload = "LD_PRELOAD=" .. cc:read("l") .. " "
    cc:close()
  end
  local p = assert(io.popen(("env %s %s%s %q 2>&1"):format(env or "", preload, lua, path)))
  local out = p:read("a")
  p:close()
  os.remove(path)
  return out
end

-- What _malloc_state says in the host and in one of its workers:
-- "tuned mapped mode | tuned mapped mode".
local PROBE = [[
  local coproc = require "coproc"
  local core = require "coproc.core"
  local pre = os.getenv("PRE")
  if pre then assert(load(pre))() end
  local function state()
    local t, m, mode = core._malloc_state()
    return ("%s %s %s"):format(t, m, mode)
  end
  local w <close> = coproc.WorkerResource(function(m)
    local core = require "coproc.core"
    local t, mp, mode = core._malloc_state()
    m:send_reply(("%s %s %s"):format(t, mp, mode))
  end):start()
  io.write(state(), " | ", w.messenger:receive_blocking(), "\n")
]]

-- tuned, mapped of one side; mapped is nil when it cannot be told (another
-- malloc in charge: a sanitizer's).
local function parse(side)
  local t, m, mode = side:match("(%a+) (%a+) (%a+)")
  assert(t, "unexpected output: " .. side)
  return t == "true", m == "true" or (m == "false" and false) or nil, mode
end

-- Where another malloc is in charge (a sanitizer's, valgrind's) it cannot
-- be told whether blocks are mapped, and mallopt may not take: only the
-- mode is checked there.
local function check(out, host_tuned, worker_tuned, mode)
  local host, worker = out:match("^(.-) | (.-)\n$")
  assert(host, "unexpected output: " .. out)
  for _, side in ipairs { { "host", host, host_tuned }, { "worker", worker, worker_tuned } } do
    local name, text, tuned = side[1], side[2], side[3]
    local t, m, smode = parse(text)
    assert.equal(mode, smode, name .. ": " .. out)
    if m ~= nil then
      assert.equal(tuned, t, name .. ": " .. out)
      assert.equal(not tuned, m, name .. "'s 64 MiB block mapped: " .. out)
    end
  end
end

describe("malloc tuning", function()
  it("a stock lua5.4 that requires coproc keeps its malloc; its workers tune theirs", function()
    check(run("lua5.4", PROBE), false, true, "unset")
  end)

  it("coproc-lua and its workers tune malloc", function()
    check(run(COPROC_LUA, PROBE), true, true, "unset")
  end)

  it("COPROC_MALLOC=off: neither coproc-lua nor its workers touch malloc", function()
    check(run(COPROC_LUA, PROBE, "COPROC_MALLOC=off"), false, false, "off")
    check(run("lua5.4", PROBE, "COPROC_MALLOC=off"), false, false, "off")
  end)

  it("COPROC_MALLOC=keep or coproc.tune_malloc() tunes a stock lua5.4 host", function()
    check(run("lua5.4", PROBE, "COPROC_MALLOC=keep"), true, true, "keep")
    -- (false where the C library has no such settings: a sanitizer's malloc)
    local out = run("lua5.4", PROBE, "PRE='io.write(tostring(require(\"coproc\").tune_malloc()), \" \")'")
    local said, rest = out:match("^(%a+) (.*)$")
    check(rest, said == "true", true, "unset")
  end)

  it("an unknown COPROC_MALLOC value counts as unset", function()
    check(run("lua5.4", PROBE, "COPROC_MALLOC=sometimes"), false, true, "bad")
    check(run(COPROC_LUA, PROBE, "COPROC_MALLOC=sometimes"), true, true, "bad")
  end)

  it("tune_malloc is part of the API", function()
    assert.equal(core.tune_malloc, coproc.tune_malloc)
    assert.equal("function", type(coproc.tune_malloc))
  end)
end)
