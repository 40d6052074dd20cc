--- coproc.worker: what runs inside a worker process (internal).
-- The C side forks, sets up the messenger and calls `main_fresh` (new Lua
-- state; target and kwargs arrive encoded) or `run` (inherited state). The
-- return value is the process exit code.
local core = require "coproc.core"
local errors = require "coproc.errors"
require "coproc.flushing"   -- a reply is written before a command blocks or ends us

local M = {}

-- Taken at load time: the target may set globals such as `pcall` to nil
-- before it returns or raises, and what reports that must still work.
local type, error, pcall, xpcall, tostring = type, error, pcall, xpcall, tostring
local rawget, setmetatable, getmetatable, pairs = rawget, setmetatable, getmetatable, pairs
local traceback = debug.traceback
local decode = core.decode

local function instantiate(target, messenger, kwargs)
  if type(target) == "function" then
    return function() return target(messenger, kwargs) end
  end
  local cls = target
  if rawget(cls, "__index") == nil then cls.__index = cls end
  local self = setmetatable({}, cls)
  for k, v in pairs(kwargs or {}) do self[k] = v end
  self.messenger = messenger
  local run = cls.run
  if run == nil then
    local mt = getmetatable(cls)
    if cls.__call ~= nil or (mt and mt.__call) then run = function(o) return o() end end
  end
  if run == nil then
    error("worker class has neither a 'run' method nor '__call'", 0)
  end
  return function() return run(self) end
end

-- What an error in the worker becomes on the wire (l_messenger.c send_error):
-- its message and traceback, the class and fields of a coproc error, and
-- any other non-string error value itself.
local function handler(e)
  if errors.is(e, errors.ResourceRequestedClose) then return e end
  if errors.is(e) then
    local msg = tostring(rawget(e, "message"))
    return { message = msg, traceback = traceback(tostring(e), 2), class = e.class.name,
             fields = errors.plain_fields(e) }
  end
  local msg = errors.describe_value(e)
  local info = { message = msg, traceback = traceback(msg, 2) }
  if type(e) ~= "string" then info.value = e end   -- error(false) keeps its false
  return info
end

--- Run target in this process; returns the exit code.
function M.run(messenger, target, kwargs)
  local ok, body = pcall(instantiate, target, messenger, kwargs)
  local err
  if ok then
    local done
    done, err = xpcall(body, handler)
    if done then return 0 end
  else
    err = { message = tostring(body), traceback = traceback(tostring(body), 1) }
  end
  if errors.is(err, errors.ResourceRequestedClose) then return 0 end
  -- Report to the host; if it is gone there is nobody to tell.
  pcall(messenger.send_error, messenger, err)
  return 1
end

--- Entry point of a "fresh" worker: decode {target, kwargs} and run.
function M.main_fresh(messenger, payload)
  local ok, t = pcall(decode, payload)
  if not ok then
    pcall(messenger.send_error, messenger, { message = "cannot rebuild the worker: " .. tostring(t) })
    return 1
  end
  return M.run(messenger, t[1], t[2])
end

return M
