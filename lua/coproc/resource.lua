--- coproc.resource: worker classes and WorkerResource, one worker process
-- with its messenger.
local core = require "coproc.core"
local errors = require "coproc.errors"

local M = {}

M.PriorityMessenger = setmetatable({ name = "PriorityMessenger", fifo = false },
  { __tostring = function() return "coproc.PriorityMessenger" end })
M.MultiMessenger = setmetatable({ name = "MultiMessenger", fifo = true },
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

--- WorkerResource(target, opts): target is a class table or function(messenger, kwargs).
-- opts.method: "fresh" (default) or "inherit"; opts.messenger_type:
-- coproc.PriorityMessenger (default) or coproc.MultiMessenger; opts.trust:
-- "code" (default) or "data", what the host's end accepts from the worker.
function M.WorkerResource(target, opts)
  local tt = type(target)
  if tt ~= "table" and tt ~= "function" then
    error("bad argument #1 to 'WorkerResource' (worker class or function expected, got " .. tt .. ")", 2)
  end
  opts = opts or {}
  local method = opts.method or "fresh"
  if method ~= "fresh" and method ~= "inherit" then
    error("bad option 'method' to 'WorkerResource' ('fresh' or 'inherit' expected, got '" .. tostring(method) .. "')", 2)
  end
  local mtype = opts.messenger_type or M.PriorityMessenger
  if mtype ~= M.PriorityMessenger and mtype ~= M.MultiMessenger then
    error("bad option 'messenger_type' to 'WorkerResource' (coproc.PriorityMessenger or coproc.MultiMessenger expected)", 2)
  end
  -- trust: what the host accepts from this worker (docs/protocol.md, "Trust").
  local trust = opts.trust or "code"
  if trust ~= "code" and trust ~= "data" then
    error("bad option 'trust' to 'WorkerResource' ('code' or 'data' expected, got '" .. tostring(trust) .. "')", 2)
  end
  return setmetatable({ target = target, method = method, messenger_type = mtype, trust = trust }, WorkerResource)
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
  local m, proc = core.spawn(self.target, kwargs or {},
    { method = self.method, fifo = self.messenger_type.fifo, trust = self.trust })
  self.messenger, self._proc = m, proc
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
local function shutdown(self, timeout)
  local p, m = rawget(self, "_proc"), rawget(self, "messenger")
  if not p then return end
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

WorkerResource.__close = function(self) pcall(shutdown, self) end
WorkerResource.__gc = function(self) pcall(shutdown, self) end

function WorkerResource:__tostring()
  local p = rawget(self, "_proc")
  local state = not p and "not started" or (p:poll() and "exited" or "running")
  return ("coproc.WorkerResource(%s%s)"):format(state, p and (", pid " .. p:pid()) or "")
end

M.WorkerResource_mt = WorkerResource
return M
