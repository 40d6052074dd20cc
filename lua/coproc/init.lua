--- coproc: stateful worker processes for Lua, with prioritised,
-- multi-channel messaging both ways. See docs/api.md.
local core = require "coproc.core"
local errors = require "coproc.errors"
local resource = require "coproc.resource"

local coproc = {
  _VERSION = "coproc " .. core.version,
  core = core,
  is = errors.is,
  Error = errors.Error,
  null = core.null,
  array = core.array,
  map = core.map,
  encode = core.encode,
  decode = core.decode,
  wait = core.wait,
  cpu_count = core.cpu_count,
  getpid = core.getpid,
  now = core.now,
  class = resource.class,
  BaseWorkerProcess = resource.class,
  WorkerResource = resource.WorkerResource,
  PriorityMessenger = resource.PriorityMessenger,
  MultiMessenger = resource.MultiMessenger,
  Messenger = core.Messenger,
}

for _, name in ipairs { "ResourceRequestedClose", "WorkerError", "WorkerDied", "Timeout",
    "EncodeError", "ProtocolError", "WorkerIsAlreadyAliveError", "WorkerIsAlreadyDeadError",
    "WorkerIsDeadError", "Cancelled", "OSError", "MonitorError", "Interrupted", "QueueFull" } do
  coproc[name] = errors[name]
end

-- The larger parts load on first use.
local lazy = {
  Pool = "coproc.pool", WorkerResourcePool = "coproc.pool", LazyPool = "coproc.pool",
  Monitor = "coproc.monitor",
}

return setmetatable(coproc, {
  __index = function(t, k)
    local mod = lazy[k]
    if not mod then return nil end
    local m = require(mod)
    local v = type(m) == "table" and rawget(m, k) or m
    rawset(t, k, v)
    return v
  end,
})
