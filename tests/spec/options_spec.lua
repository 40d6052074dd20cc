-- Issue #9 item 4: every public call that takes an options table checks it
-- (unknown key -> "bad option 'x' to 'F' (did you mean 'y'?)", at the
-- caller's line), and integral floats are accepted where an integer is
-- expected.
local describe, it, assert = describe, it, assert
local _ENV = _G   -- shipped functions must not capture busted's sandbox
local coproc = require "coproc"

local function echo(m)
  while true do m:send_reply(m:receive_blocking()) end
end

-- The error of f() and the line it should name (the line of the call).
local function err_of(f)
  local ok, e = pcall(f)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

local function line_here() return debug.getinfo(2, "l").currentline end

describe("options are checked everywhere", function()
  it("WorkerResource: unknown option, did-you-mean, at the caller's line", function()
    local line
    local e = err_of(function() line = line_here(); coproc.WorkerResource(echo, { methd = "inherit" }) end)
    assert.matches("bad option 'methd' to 'WorkerResource' %(did you mean 'method'%?%)", e)
    assert.matches("options_spec.lua:" .. line .. ":", e)
    e = err_of(function() coproc.WorkerResource(echo, { method = "spawn" }) end)
    assert.matches("bad option 'method' to 'WorkerResource' %('fresh' or 'inherit' expected, got 'spawn'%)", e)
    e = err_of(function() coproc.WorkerResource(echo, { messenger_type = "fifo" }) end)
    assert.matches("bad option 'messenger_type' to 'WorkerResource'", e)
    e = err_of(function() coproc.WorkerResource(echo, 5) end)
    assert.matches("options table expected", e)
    -- the trust option is a known key (the helper adding it gives it its meaning)
    e = err_of(function() coproc.WorkerResource(echo, { trust = "none" }) end)
    assert.matches("bad option 'trust' to 'WorkerResource' %('code' or 'data' expected", e)
    assert.is_table(coproc.WorkerResource(echo, { trust = "data", method = "fresh" }))
  end)

  it("WorkerResourcePool: its options, integral float sizes, map_messages options", function()
    local line
    local e = err_of(function()
      line = line_here(); coproc.WorkerResourcePool(2, echo, nil, { mehtod = "fresh" })
    end)
    assert.matches("bad option 'mehtod' to 'WorkerResourcePool' %(did you mean 'method'%?%)", e)
    assert.matches("options_spec.lua:" .. line .. ":", e)
    assert.matches("positive integer expected, got 1.5",
      err_of(function() coproc.WorkerResourcePool(1.5, echo) end))
    assert.matches("bad argument #3 to 'WorkerResourcePool'",
      err_of(function() coproc.WorkerResourcePool(1, echo, 7) end))
    local pool <close> = coproc.WorkerResourcePool(4 / 2, echo):start()
    assert.equal(2, #pool)
    e = err_of(function() line = line_here(); pool:map_messages({ 1 }, nil, { deph = 3 }) end)
    assert.matches("bad option 'deph' to 'map_messages' %(did you mean 'depth'%?%)", e)
    assert.matches("options_spec.lua:" .. line .. ":", e)
    local n = 0
    for _ in pool:map_messages({ 1, 2, 3 }, nil, { depth = 1.0 }) do n = n + 1 end
    assert.equal(3, n)
  end)

  it("Pool calls and futures: unknown options and integral floats", function()
    local pool <close> = coproc.Pool(coproc.cpu_count() / coproc.cpu_count() * 2)
    assert.equal(2, #pool:pids())
    local line
    local e = err_of(function() line = line_here(); pool:map(print, { 1 }, { chunksise = 4 }) end)
    assert.matches("bad option 'chunksise' to 'map' %(did you mean 'chunksize'%?%)", e)
    assert.matches("options_spec.lua:" .. line .. ":", e)
    e = err_of(function() line = line_here(); pool:apply_async(print, {}, { callbak = print }) end)
    assert.matches("bad option 'callbak' to 'apply_async' %(did you mean 'callback'%?%)", e)
    assert.matches("options_spec.lua:" .. line .. ":", e)
    e = err_of(function() pool:apply_async(print, {}, { callback = 5 }) end)
    assert.matches("bad option 'callback' to 'apply_async' %(function expected, got 5%)", e)
    local f = pool:submit(function() return 1 end)
    e = err_of(function() line = line_here(); coproc.wait({ f }, { return_whn = "first" }) end)
    assert.matches("bad option 'return_whn' to 'wait' %(did you mean 'return_when'%?%)", e)
    assert.matches("options_spec.lua:" .. line .. ":", e)
    e = err_of(function() coproc.wait({ f }, { return_when = "any" }) end)
    assert.matches("'all' or 'first' or 'first_error' expected, got 'any'", e)
    assert.same({ 1, 4, n = 2 }, pool:map(function(x) return x * x end, { 1, 2 }, { chunksize = 1.0 }))
  end)

  it("Monitor methods with options: add_note, save_memory_plot, to_csv", function()
    local m = coproc.Monitor { snapshot_seconds = 0.05, save_fig_freq = 10.0 }
    local line
    local e = err_of(function() line = line_here(); m:add_note("x", nil, { do_lg = false }) end)
    assert.matches("bad option 'do_lg' to 'add_note' %(did you mean 'do_log'%?%)", e)
    assert.matches("options_spec.lua:" .. line .. ":", e)
    local Stats = require "coproc.monitor.stats"
    local st = Stats.new(coproc.getpid(), 0.1, "rss")
    do
      e = err_of(function() line = line_here(); st:to_csv(os.tmpname(), { note_path = "x" }) end)
      assert.matches("bad option 'note_path' to 'to_csv' %(did you mean 'notes_path'%?%)", e)
      assert.matches("options_spec.lua:" .. line .. ":", e)
      e = err_of(function() st:save_memory_plot("/tmp/x.png", { font_sise = 8 }) end)
      assert.matches("bad option 'font_sise' to 'save_memory_plot' %(did you mean 'font_size'%?%)", e)
    end
  end)
end)
