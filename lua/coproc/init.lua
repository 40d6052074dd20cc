--- coproc: stateful worker processes for Lua, with prioritised,
-- multi-channel messaging both ways. See docs/api.md.
local core = require "coproc.core"
require "coproc.flushing"   -- a request is written before a command blocks
local async = require "coproc.async"
local errors = require "coproc.errors"
local options = require "coproc.options"
local future = require "coproc.future"
local iterable = require "coproc.iterable"
local resource = require "coproc.resource"

local Future, core_wait = future.Future, core.wait

--- wait(messengers, timeout) -> the messengers ready (core.wait), or
-- wait(futures, opts, timeout) -> done, not_done (coproc.future.wait): the
-- kind of the list's first element decides (an empty list with an options
-- table is a list of futures).
local function wait(list, a, b)
  if type(list) == "table" then
    local first = list[1]
    if getmetatable(first) == Future or (first == nil and type(a) == "table") then
      return future.wait(list, a, b)   -- a tail call: errors name the caller's line
    end
  end
  local ok, r = pcall(core_wait, list, a)
  if ok then return r end
  -- an argument error: name the caller's line and 'wait', as core.wait would
  local msg = type(r) == "string" and (r:match("^bad argument .*") or r:match("^[^\n]-:%d+: (bad argument .*)$"))
  if msg then error((msg:gsub("to '[%w_.]*wait'", "to 'wait'")), 2) end
  error(r, 0)
end

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
  wait = wait,
  as_completed = future.as_completed,
  iter = iterable.iter,
  cpu_count = core.cpu_count,
  getpid = core.getpid,
  now = core.now,
  tune_malloc = core.tune_malloc,
  class = resource.class,
  BaseWorkerProcess = resource.class,
  WorkerResource = resource.WorkerResource,
  PriorityMessenger = resource.PriorityMessenger,
  MultiMessenger = resource.MultiMessenger,
  Messenger = core.Messenger,
  async = async.async,
  run_all = async.run_all,
  sleep = async.sleep,
  flush_all = core.flush_all,
}

--- Messenger.new_pair(opts) -> a, b: two connected messengers in this
-- process (the seed's tests use them). opts.messenger_type as for
-- WorkerResource.
local PAIR_OPTIONS = { messenger_type = "any" }
function core.Messenger.new_pair(opts)
  opts = options.check(opts, PAIR_OPTIONS, "new_pair", 2)
  local mtype = opts.messenger_type
  if mtype ~= nil and mtype ~= resource.PriorityMessenger and mtype ~= resource.MultiMessenger then
    error("bad option 'messenger_type' to 'new_pair' (coproc.PriorityMessenger or coproc.MultiMessenger expected)", 2)
  end
  return core.messenger_pair(mtype == resource.MultiMessenger)
end

for _, name in ipairs { "ResourceRequestedClose", "WorkerError", "WorkerDied", "Timeout",
    "EncodeError", "ProtocolError", "WorkerIsAlreadyAliveError", "WorkerIsAlreadyDeadError",
    "WorkerIsDeadError", "Cancelled", "OSError", "MonitorError", "Interrupted", "QueueFull", "CallbackError" } do
  coproc[name] = errors[name]
end

-- The larger parts load on first use.
local lazy = {
  Pool = "coproc.pool", WorkerResourcePool = "coproc.pool", LazyPool = "coproc.pool",
  Monitor = "coproc.monitor",
  PriorityQueue = "coproc.queues", MultiQueue = "coproc.queues", PriorityMultiQueue = "coproc.queues",
  mpi = "coproc.mpi",   -- loads no MPI: coproc.mpi_core comes with its main()
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
