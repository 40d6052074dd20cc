-- progress_spec.lua: the progress bar (lua/coproc/progress.lua).
local describe, it, assert = describe, it, assert
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"
local progress = require "coproc.progress"

-- A stream that keeps what the terminal would show: "\r" goes back to the
-- line start, "\27[K" erases to its end, other text overwrites.
local function screen()
  local s = { line = {}, col = 1 }
  function s:write(...)
    for _, chunk in ipairs { ... } do
      local i = 1
      while i <= #chunk do
        if chunk:sub(i, i) == "\r" then self.col = 1; i = i + 1
        elseif chunk:sub(i, i + 2) == "\27[K" then
          for k = self.col, #self.line do self.line[k] = nil end
          i = i + 3
        elseif chunk:sub(i, i) == "\n" then i = i + 1
        else self.line[self.col] = chunk:sub(i, i); self.col = self.col + 1; i = i + 1 end
      end
    end
    return self
  end
  function s:text() return table.concat(self.line) end
  return s
end

describe("coproc.progress", function()
  it("leaves no stale characters when a line gets shorter", function()
    local t = 0
    local out = screen()
    local bar = progress.new(100000, { force = true, stream = out, clock = function() return t end, interval = 0 })
    t = 1; bar:advance(1)      -- slow start: a long ETA ("27:46:39")
    assert.truthy(out:text():find("ETA 27:46:39$"), out:text())
    t = 2; bar:advance(99999)  -- then fast: "00:00", shorter
    assert.truthy(out:text():find("ETA 00:00$"), out:text())
    bar:finish()
    assert.truthy(out:text():find("100000/100000 100%", 1, true))
    assert.falsy(out:text():find("ETA %S+%s+%S"), out:text())
  end)

  it("writes the final line once to a stream that is not a terminal", function()
    local chunks = {}
    local log = { write = function(self, ...) for _, c in ipairs { ... } do chunks[#chunks + 1] = c end return self end }
    local t = 0
    local bar = progress.new(10, { force = true, stream = log, clock = function() return t end, interval = 0 })
    t = 1; bar:advance(5)
    t = 2; bar:advance(5)
    bar:finish()
    local text = table.concat(chunks)
    local _, finals = text:gsub("10/10 100%%", "")
    assert.equal(1, finals, text)
    assert.equal("\n", text:sub(-1))
    -- a bar finished before its last redraw still ends on the final state
    chunks = {}
    bar = progress.new(10, { force = true, stream = log, clock = function() return t end, interval = 100 })
    t = 3; bar:advance(3)
    t = 4; bar:advance(3)
    bar:finish()
    text = table.concat(chunks)
    assert.truthy(text:find("6/10", 1, true), text)
    assert.equal("\n", text:sub(-1))
  end)

  it("measures wall time by default, not CPU time", function()
    local out = screen()
    local bar = progress.new(10, { force = true, stream = out })
    assert.equal(coproc.now, bar.clock)
    local t0 = coproc.now()
    os.execute("sleep 0.2") -- 0.2 s of waiting, no CPU of ours
    local waited = coproc.now() - t0
    bar:advance(1)
    -- 1 item in >= 0.2 s of waiting: at most 5 it/s (CPU time would say thousands)
    local rate = tonumber(out:text():match("([%d.]+)k? it/s"))
    assert.truthy(waited >= 0.19 and rate <= 5.5, out:text())
  end)
end)
