--- coproc.monitor: a worker process that samples memory (RSS, VMS, PSS,
-- USS) and CPU of a process and its descendants from /proc, takes notes,
-- writes a log and draws plots. Also `coproc.Monitor`. See docs/monitor.md.
--
--   local m <close> = coproc.Monitor{ snapshot_seconds = 0.05, fig_path = "mem.png" }:start()
--   m:add_note("starting workers")
--   ...
--   local stats = m:get_stats()
--   stats:save_memory_plot("mem.png", { font_size = 8 })
--
-- The parts: this file (the host side), sampler.lua (the worker),
-- stats.lua (CSV, JSON, plot preparation), cli.lua (the command line),
-- format.lua (readable sizes and times).
local core = require "coproc.core"
local options = require "coproc.options"
local errors = require "coproc.errors"
local format = require "coproc.monitor.format"
local Stats = require "coproc.monitor.stats"

local C = core.monitor

local M = {}
M.FIELDS = Stats.FIELDS
M.Stats = Stats
M.human_bytes = format.bytes

local DEFAULTS = {
  pid = false,             -- process to watch; default: the host
  snapshot_seconds = 0.25, -- sampling interval
  include_children = true, -- descendants too
  log_path = false,        -- notes as readable lines, appended as they come
  fig_path = false,        -- plot redrawn while running (.png or .svg)
  save_fig_freq = 10,      -- redraw every N samples ...
  fig_min_seconds = 1.0,   -- ... but not more often than this (drawing costs ~10-50 ms)
  smaps_seconds = 0.5,     -- each process's PSS/USS (smaps_rollup: ~10-100 us) re-read this often; 0: never
  rescan_seconds = 0.2,    -- look for new descendants this often (and when one exits)
  metric = "pss",          -- the total and the plots: pss (honest for forked trees), rss, uss, vms
  include_cpu = true,      -- the CPU panel of fig_path
  font_size = false,       -- plot text size in points
  verbose = false,
}
M.DEFAULTS = DEFAULTS

-- Misuse raises a Lua error naming the option (as every coproc option check).
local function bad(msg) error(msg, 4) end

local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a:sub(i, i) == b:sub(j, j) and 0 or 1))
    end
    prev = cur
  end
  return prev[#b]
end

local function did_you_mean(k)
  local best, bd
  for name in pairs(DEFAULTS) do
    local d = distance(k, name)
    if d <= 3 and (not bd or d < bd) then best, bd = name, d end
  end
  return best and (" (did you mean '%s'?)"):format(best) or ""
end

-- Check that path can be written, without leaving a new empty file behind.
-- Raises OSError naming the option and the file.
local function check_writable(path, what)
  if type(path) ~= "string" or path == "" then bad(("bad option '%s' to 'Monitor' (a file path expected)"):format(what)) end
  local existed = io.open(path, "r")
  if existed then existed:close() end
  local f, e, code = io.open(path, "a")
  if not f then
    errors.raise(errors.OSError, ("coproc.Monitor: cannot write %s '%s': %s"):format(what, path, e),
      { errno = code, call = "open", path = path })
  end
  f:close()
  if not existed then os.remove(path) end
end

--- Monitor(opts) --> monitor (not started). Options: see DEFAULTS. Bad
-- options raise a Lua error naming the option; an unwritable path raises
-- OSError, a pid that does not exist MonitorError.
function M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then bad("bad argument #1 to 'Monitor' (table of options expected)") end
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if DEFAULTS[k] == nil then bad(("bad option '%s' to 'Monitor'%s"):format(tostring(k), did_you_mean(tostring(k)))) end
    o[k] = v
  end
  local iv = o.snapshot_seconds
  if type(iv) ~= "number" or iv ~= iv or iv <= 0 or iv == math.huge then
    bad(("bad option 'snapshot_seconds' to 'Monitor' (a positive number of seconds expected, got %s)"):format(options.show(iv)))
  end
  if not o.pid then o.pid = core.getpid() end
  if math.type(o.pid) ~= "integer" and type(o.pid) == "number" and o.pid == math.floor(o.pid) then
    o.pid = math.tointeger(o.pid)
  end
  if math.type(o.pid) ~= "integer" or o.pid <= 0 then
    bad(("bad option 'pid' to 'Monitor' (a positive integer expected, got %s)"):format(options.show(o.pid)))
  end
  if not C.exists(o.pid) then
    errors.raise(errors.MonitorError, ("coproc.Monitor: no process with pid %d"):format(o.pid), { pid = o.pid })
  end
  o.save_fig_freq = options.integer(o.save_fig_freq) or o.save_fig_freq
  if math.type(o.save_fig_freq) ~= "integer" or o.save_fig_freq < 1 then
    bad(("bad option 'save_fig_freq' to 'Monitor' (an integer >= 1 expected, got %s)"):format(options.show(o.save_fig_freq)))
  end
  for _, k in ipairs { "fig_min_seconds", "smaps_seconds", "rescan_seconds" } do
    if type(o[k]) ~= "number" or o[k] ~= o[k] or o[k] < 0 then
      bad(("bad option '%s' to 'Monitor' (a number >= 0 expected, got %s)"):format(k, tostring(o[k])))
    end
  end
  if o.font_size and (type(o.font_size) ~= "number" or o.font_size <= 0) then
    bad("bad option 'font_size' to 'Monitor' (a positive number of points expected)")
  end
  if not Stats.METRICS[o.metric] then
    bad(("bad option 'metric' to 'Monitor' (pss, rss, uss or vms expected, got %s)"):format(options.show(o.metric)))
  end
  if o.log_path then check_writable(o.log_path, "log_path") end
  if o.fig_path then
    if type(o.fig_path) ~= "string" or not (o.fig_path:lower():match("%.png$") or o.fig_path:lower():match("%.svg$")) then
      bad(("bad option 'fig_path' to 'Monitor' (a .png or .svg path expected, got %s)"):format(options.show(o.fig_path)))
    end
    if not Stats.have_plot() then
      errors.raise(errors.MonitorError, "coproc.Monitor: fig_path needs coproc.plot (PLplot), which is not installed")
    end
    check_writable(o.fig_path, "fig_path")
  end
  return setmetatable({ opts = o }, M.MonitorClass)
end

local Monitor = {}
Monitor.__index = Monitor
Monitor.__name = "coproc.Monitor"
M.MonitorClass = Monitor

local function message_of(err)
  return type(err) == "table" and tostring(err.remote_message or err.message) or tostring(err)
end

--- Start the worker; returns the monitor (so `Monitor{...}:start()` chains).
-- Raises MonitorError if the worker cannot watch the process.
function Monitor:start()
  local coproc = require "coproc"
  if self.worker and self.worker:is_alive() then
    errors.raise(errors.MonitorError, "coproc.Monitor: already started")
  end
  local kw = {}
  for k, v in pairs(self.opts) do kw[k] = v end
  kw.t0, kw.wall0 = core.now(), core.time()
  self.t0 = kw.t0
  local w = coproc.WorkerResource(function(m, args)
    return require("coproc.monitor.sampler").run(m, args)
  end)
  w:start(kw)
  self.worker, self.messenger, self.owner = w, w.messenger, core.getpid()
  -- Wait until the worker has opened the process set, so a bad pid or log
  -- path fails here and notes taken right after start are not lost.
  local ok, err = pcall(function()
    self.messenger:send_request({ op = "ready" })
    local r = self.messenger:receive_blocking(nil, 30)
    self.pids_at_start = r.pids
  end)
  if not ok then
    w:close()
    self.worker, self.messenger = nil, nil
    local msg = message_of(err)
    if msg:find("no process with pid", 1, true) then
      errors.raise(errors.MonitorError, ("coproc.Monitor: no process with pid %d"):format(self.opts.pid),
        { pid = self.opts.pid, cause = err })
    end
    errors.raise(errors.MonitorError, "coproc.Monitor: worker failed to start: " .. msg, { cause = err })
  end
  return self
end

-- A worker that died (killed, out of memory) is the monitor's failure, as
-- docs/monitor.md says: MonitorError, with the messenger's error as cause.
local function died(w, err, what)
  if errors.is(err, errors.WorkerDied) or errors.is(err, errors.WorkerIsDeadError) then
    errors.raise(errors.MonitorError, ("coproc.Monitor: its worker (pid %s) died and cannot %s: %s")
      :format(w and w:pid() or "?", what, message_of(err)), { cause = err })
  end
  error(err, 0)
end

local function need(self)
  if not self.messenger then errors.raise(errors.MonitorError, "coproc.Monitor: not running (call start())") end
  if self.owner ~= core.getpid() then
    -- A forked child (an "inherit" worker) has a copy of the object, but
    -- the connection to the monitor's worker is the host's alone.
    errors.raise(errors.MonitorError, ("coproc.Monitor: this monitor belongs to pid %d; process %d (forked from it) "
      .. "cannot use it: take notes in the host, or start a Monitor here"):format(self.owner, core.getpid()),
      { pid = core.getpid() })
  end
  return self.messenger
end

--- Record a note with the time and the memory at that moment. opts:
-- do_log (to log_path), do_label (on plots), do_print (to stdout); all
-- default true. Positional booleans also work: add_note(note, details, false).
local NOTE_OPTS = { do_log = "boolean", do_label = "boolean", do_print = "boolean" }

function Monitor:add_note(note, details, opts, do_label, do_print)
  local o = type(opts) == "table" and options.check(opts, NOTE_OPTS, "add_note", 2)
    or { do_log = opts, do_label = do_label, do_print = do_print }
  local m = need(self)
  local ok, err = pcall(m.send_norequest, m, { op = "note", t = core.now(), note = tostring(note),
    details = details ~= nil and tostring(details) or nil,
    do_log = o.do_log ~= false, do_label = o.do_label ~= false, do_print = o.do_print ~= false })
  if not ok then died(self.worker, err, "take a note") end
  return self
end

--- Only print (with the memory); no log line, no plot label.
function Monitor:print(note, details)
  return self:add_note(note, details, { do_log = false, do_label = false, do_print = true })
end
--- Only a plot label.
function Monitor:label(note, details)
  return self:add_note(note, details, { do_log = false, do_label = true, do_print = false })
end
--- Only a log line.
function Monitor:log(note, details)
  return self:add_note(note, details, { do_log = true, do_label = false, do_print = false })
end

-- The worker is stopped (SIGSTOP, Ctrl-Z of its group): it answers nothing
-- until it is continued.
local function is_stopped(pid)
  local f = pid and io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local st = f:read("a"):match("%) (%a)")
  f:close()
  return st == "T" or st == "t"
end

-- The answer to a request sent on m, within timeout seconds; waits in
-- slices so that a stopped worker is noticed within one.
local function answer(w, m, timeout, what)
  local deadline = core.now() + timeout
  while true do
    local left = deadline - core.now()
    local ok, v = pcall(m.receive_blocking, m, nil, left < 0.5 and (left > 0 and left or 0) or 0.5)
    if ok then return v end
    if not errors.is(v, errors.Timeout) then died(w, v, what) end
    if core.now() >= deadline then error(v, 0) end
    if is_stopped(w and w:pid()) then
      errors.raise(errors.MonitorError, ("coproc.Monitor: its worker (pid %d) is stopped and cannot %s")
        :format(w:pid(), what))
    end
  end
end

local function request(self, msg, timeout)
  local m = need(self)
  local ok, err = pcall(m.send_request, m, msg)
  if not ok then died(self.worker, err, "answer") end
  return answer(self.worker, m, timeout or 60, "answer")
end

--- Look for new descendants now (they are also found on their own within
-- rescan_seconds). Returns the number of processes watched.
function Monitor:update_child_processes()
  return request(self, { op = "rescan" })
end

--- Samples and notes so far, as a Stats object.
function Monitor:get_stats()
  return Stats.wrap(request(self, { op = "stats" }))
end

--- smaps_rollup reads so far: what the PSS/USS figures cost.
function Monitor:smaps_reads()
  return request(self, { op = "smaps_reads" })
end

--- Draw the plot now (in the host) from the current stats.
function Monitor:save_memory_plot(path, opts)
  self:get_stats():save_memory_plot(path, opts)
  return self
end

function Monitor:is_alive() return self.worker ~= nil and self.worker:is_alive() end
function Monitor:worker_pid() return self.worker and self.worker:pid() end

--- Stop sampling: a last sample, the final plot (fig_path), the log closed.
-- Safe to call twice.
function Monitor:stop()
  local w, m = self.worker, self.messenger
  if not w then return self end
  self.worker, self.messenger = nil, nil
  local ok, err = pcall(function()
    m:send_request({ op = "stop" })
    answer(w, m, 120, "stop (it was killed)")
    w:join(10)
  end)
  w:close()
  if not ok then
    if errors.is(err, errors.WorkerDied) or errors.is(err, errors.WorkerIsDeadError) then died(w, err, "stop") end
    if errors.is(err) then error(err, 0) end
    errors.raise(errors.MonitorError, "coproc.Monitor: stopping failed: " .. message_of(err), { cause = err })
  end
  return self
end

-- <close>: stop(), never raising (as every coproc resource): a failure is
-- reported with warn() and kept in m.stop_error. __gc only ends the worker
-- (close request, SIGTERM, SIGKILL; about 1.5 s at most). Both leave a
-- copy of the monitor in a forked child alone.
function Monitor:__close()
  if self.owner ~= core.getpid() then return end
  local ok, err = pcall(self.stop, self)
  if not ok then
    self.stop_error = err
    warn("coproc: Monitor: stop failed in <close>: ", tostring(err))
  end
end
Monitor.__gc = function(self)
  if self.worker and self.owner == core.getpid() then pcall(self.worker.close, self.worker) end
end

function Monitor:__tostring()
  return ("coproc.Monitor(pid %d, every %g s, %s)"):format(self.opts.pid, self.opts.snapshot_seconds,
    self.worker and "running" or "stopped")
end

--- Command line: coproc-lua -m coproc.monitor [options] -- command args...
function M.main(args)
  return require("coproc.monitor.cli").main(args)
end

M.Monitor = setmetatable(M, { __call = function(_, opts) return M.new(opts) end })

return M
