--- coproc.resource: worker classes and WorkerResource, one worker process
-- with its messenger.
local core = require "coproc.core"
local errors = require "coproc.errors"
local options = require "coproc.options"

local M = {}

M.PriorityMessenger = setmetatable({ name = "PriorityMessenger", arrival_order = false },
  { __tostring = function() return "coproc.PriorityMessenger" end })
M.MultiMessenger = setmetatable({ name = "MultiMessenger", arrival_order = true },
  { __tostring = function() return "coproc.MultiMessenger" end })

--- Make a worker class: a table whose fields are defaults and whose methods
-- run in the worker (`run` or `__call`). A plain table works as well.
function M.class(defaults)
  local cls = defaults or {}
  if type(cls) ~= "table" then error("bad argument #1 to 'class' (table expected)", 2) end
  cls.__index = cls
  return cls
end

local WorkerResource = {}
WorkerResource.__index = WorkerResource
WorkerResource.__name = "coproc.WorkerResource"

local CLOSE_TIMEOUT = 1.0

-- The options of WorkerResource (and of WorkerResourcePool, which passes
-- them on). _status: the pool's shared status slot (core.run_batch).
M.OPTIONS = {
  method = { "fresh", "inherit" }, messenger_type = "any", trust = { "code", "data" },
  _status = "any",
}

--- Check a WorkerResource options table for the public function fname
-- (level as in options.check). Returns the checked copy.
function M.check_options(opts, fname, level)
  opts = options.check(opts, M.OPTIONS, fname, level + 1)
  local mtype = opts.messenger_type
  if mtype ~= nil and mtype ~= M.PriorityMessenger and mtype ~= M.MultiMessenger then
    error(("bad option 'messenger_type' to '%s' (coproc.PriorityMessenger or coproc.MultiMessenger expected)")
      :format(fname), level + 1)
  end
  return opts
end

--- WorkerResource(target, opts): target is a class table or function(messenger, kwargs).
-- opts.method: "fresh" (default) or "inherit"; opts.messenger_type:
-- coproc.PriorityMessenger (default) or coproc.MultiMessenger; opts.trust:
-- "code" (default) or "data", what the host's end accepts from the worker.
function M.WorkerResource(target, opts)
  local tt = type(target)
  if tt ~= "table" and tt ~= "function" then
    error("bad argument #1 to 'WorkerResource' (worker class or function expected, got " .. tt .. ")", 2)
  end
  opts = M.check_options(opts, "WorkerResource", 2)
  return setmetatable({ target = target, method = opts.method or "fresh",
    messenger_type = opts.messenger_type or M.PriorityMessenger, trust = opts.trust,
    _with_status = opts._status == true }, WorkerResource)
end

--- Start the worker; kwargs become fields of the worker instance. Returns self.
function WorkerResource:start(kwargs)
  local p = rawget(self, "_proc")
  if p and not p:poll() then
    errors.raise(errors.WorkerIsAlreadyAliveError, "worker " .. p:pid() .. " is already running")
  end
  if kwargs ~= nil and type(kwargs) ~= "table" then
    error("bad argument #1 to 'start' (table of keyword arguments expected)", 2)
  end
  if self.messenger then self.messenger:close() end
  local m, proc = core.spawn(self.target, kwargs or {}, { method = self.method,
    arrival_order = self.messenger_type.arrival_order, status = rawget(self, "_with_status"),
    trust = rawget(self, "trust") or "code" })
  self.messenger, self._proc = m, proc
  self._kwargs, self._owner = kwargs or {}, core.getpid()
  return self
end

function WorkerResource:is_alive()
  local p = rawget(self, "_proc")
  return p ~= nil and not p:poll()
end

function WorkerResource:pid()
  local p = rawget(self, "_proc")
  return p and p:pid()
end

-- The worker's status slot (bid, item), for the pool (see core.run_batch).
function WorkerResource:_status()
  local p = rawget(self, "_proc")
  if p then return p:status() end
end

--- Exit code once exited (nil, signal when killed; nil while running).
function WorkerResource:exitcode()
  local p = rawget(self, "_proc")
  if p then return p:exitcode() end
end

--- Wait for the worker to exit on its own; true when it has.
function WorkerResource:join(timeout)
  local p = rawget(self, "_proc")
  if not p then errors.raise(errors.WorkerIsDeadError, "worker was never started") end
  return p:wait(timeout)
end

-- Ask politely, then insist: close request, wait, SIGTERM, SIGKILL. Reaps.
-- Only the process that started the worker acts (a copy of the resource in
-- a forked "inherit" worker owns nothing).
local function shutdown(self, timeout)
  local p, m = rawget(self, "_proc"), rawget(self, "messenger")
  if not p or rawget(self, "_owner") ~= core.getpid() then return end
  timeout = timeout or CLOSE_TIMEOUT
  if not p:poll() then
    if m and m:is_connected() then
      pcall(m.send_close_request, m)
      pcall(m.flush, m, timeout)
    end
    local ok, done = pcall(p.wait, p, timeout)
    if not (ok and done) then p:terminate(0.5) end
  end
  if m then m:close() end
end

--- Stop the worker: close request, then SIGTERM after timeout seconds
-- (default 1), then SIGKILL. Raises WorkerIsAlreadyDeadError if it is not running.
function WorkerResource:terminate(timeout)
  local p = rawget(self, "_proc")
  if not p or p:poll() then
    local m = rawget(self, "messenger")
    if m then m:close() end
    errors.raise(errors.WorkerIsAlreadyDeadError, p and ("worker " .. p:pid() .. " is not running") or "worker was never started")
  end
  shutdown(self, timeout)
end

--- Terminate if running; never raises (used by __close and __gc).
function WorkerResource:close(timeout)
  pcall(shutdown, self, timeout)
end

--- Stop the worker if it runs (as terminate(timeout), never raising) and
-- start it again with kwargs (nil: those of the last start): a new process
-- and a new messenger. Returns self.
function WorkerResource:reset_process(kwargs, timeout)
  if kwargs ~= nil and type(kwargs) ~= "table" then
    error("bad argument #1 to 'reset_process' (table of keyword arguments expected)", 2)
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("bad argument #2 to 'reset_process' (non-negative number of seconds expected)", 2)
  end
  if kwargs == nil then kwargs = rawget(self, "_kwargs") end
  if rawget(self, "_proc") then pcall(shutdown, self, timeout) end
  return self:start(kwargs)
end

--- True once the resource has a process (it was started), running or not.
function WorkerResource:process_exists()
  return rawget(self, "_proc") ~= nil
end

WorkerResource.__close = function(self) pcall(shutdown, self) end
WorkerResource.__gc = function(self) pcall(shutdown, self) end

function WorkerResource:__tostring()
  local p = rawget(self, "_proc")
  local state = not p and "not started" or (p:poll() and "exited" or "running")
  return ("coproc.WorkerResource(%s%s)"):format(state, p and (", pid " .. p:pid()) or "")
end

--- Stop many workers at once within about grace + 0.5 s whatever they do
-- (busy, not reading, stopped): close requests to all, one shared wait for
-- their output to go and for them to exit, then SIGTERM (and SIGCONT, so a
-- stopped worker acts on it) to those left, then SIGKILL. Never raises.
-- Resources started by another process (copies in a forked child) are
-- left alone.
function M.stop_all(resources, grace)
  grace = grace or CLOSE_TIMEOUT
  local live, me = {}, core.getpid()
  for _, r in ipairs(resources) do
    local p, m = rawget(r, "_proc"), rawget(r, "messenger")
    if p and rawget(r, "_owner") == me and not p:poll() then
      live[#live + 1] = r
      if m and m:is_connected() then pcall(m.send_close_request, m) end
    end
  end
  local deadline = core.now() + grace
  for _, r in ipairs(live) do
    local m = rawget(r, "messenger")
    local left = deadline - core.now()
    if left > 0 and m and m:is_connected() then pcall(m.flush, m, left) end
  end
  for _, r in ipairs(live) do
    local left = deadline - core.now()
    pcall(r._proc.wait, r._proc, left > 0 and left or 0)
  end
  for _, r in ipairs(live) do
    local p = r._proc
    if not p:poll() then pcall(p.kill, p, 15); pcall(p.kill, p, 18) end
  end
  local kill_at = core.now() + 0.5
  for _, r in ipairs(live) do
    local left = kill_at - core.now()
    pcall(r._proc.wait, r._proc, left > 0 and left or 0)
  end
  for _, r in ipairs(live) do r._proc:terminate(0) end   -- SIGKILL what is left, and reap
  for _, r in ipairs(resources) do
    local m = rawget(r, "messenger")
    if m and rawget(r, "_owner") == me then m:close() end
  end
end

M.WorkerResource_mt = WorkerResource
return M
