--- coproc.progress: a one-line progress bar (done/total, rate, ETA) for
-- Pool maps. Draws on stderr only when stderr is a terminal, unless a stream
-- is given with force = true (tests, logs).
local core = require "coproc.core"

local M = {}

--- Is stderr a terminal?
function M.stderr_is_tty()
  return core.isatty(2)
end

local Bar = {}
Bar.__index = Bar

local function fmt_time(s)
  if s ~= s or s == math.huge or s < 0 then return "--:--" end
  s = math.floor(s + 0.5)
  if s >= 3600 then
    return ("%d:%02d:%02d"):format(s // 3600, s // 60 % 60, s % 60)
  end
  return ("%02d:%02d"):format(s // 60, s % 60)
end

local function fmt_rate(r)
  if r >= 1e6 then return ("%.1fM"):format(r / 1e6) end
  if r >= 1e3 then return ("%.1fk"):format(r / 1e3) end
  return ("%.1f"):format(r)
end

--- New bar for `total` items, or nil when it should stay silent.
-- opts: stream (default io.stderr), force (draw even if not a TTY),
-- clock (a seconds clock, default coproc.core.now: monotonic wall time, so
-- rate and ETA count the time the user waits, not this process's CPU),
-- width (bar cells, default 30),
-- label (text before the bar), interval (seconds between redraws, 0.1).
function M.new(total, opts)
  opts = opts or {}
  if not opts.force and not M.stderr_is_tty() then return nil end
  local clock = opts.clock or core.now
  return setmetatable({
    total = total, done = 0, stream = opts.stream or io.stderr, clock = clock,
    t0 = clock(), last = -math.huge, width = opts.width or 30,
    label = opts.label and (opts.label .. " ") or "", interval = opts.interval or 0.1,
  }, Bar)
end

--- The line for the current state (no carriage return).
function Bar:line()
  local total, done = self.total, self.done
  local frac = total > 0 and done / total or 1
  local cells = math.floor(frac * self.width + 0.5)
  local dt = self.clock() - self.t0
  local rate = dt > 0 and done / dt or 0
  local eta = rate > 0 and (total - done) / rate or math.huge
  return ("%s[%s%s] %d/%d %3d%% %s it/s ETA %s"):format(self.label,
    ("#"):rep(cells), ("."):rep(self.width - cells), done, total,
    math.floor(frac * 100), fmt_rate(rate), fmt_time(eta))
end

--- Advance by n items (default 1); redraws at most every `interval` s.
function Bar:advance(n)
  self.done = self.done + (n or 1)
  local now = self.clock()
  if self.done >= self.total or now - self.last >= self.interval then
    self.last = now
    -- "\27[K" clears to the end of the line: a shorter line (ETA 00:06
    -- after 00:065) leaves nothing of the longer one behind.
    self.stream:write("\r", self:line(), "\27[K")
    self.drawn = self.done
    if self.stream.flush then self.stream:flush() end
  end
end

--- Final redraw and newline (only the newline when the last line drawn
-- was already the final state: a log file gets the last line once).
-- Idempotent.
function Bar:finish()
  if self.finished then return end
  self.finished = true
  if self.drawn == self.done then self.stream:write("\n")
  else self.stream:write("\r", self:line(), "\27[K\n") end
  if self.stream.flush then self.stream:flush() end
end

return M
