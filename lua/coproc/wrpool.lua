--- coproc.wrpool: WorkerResourcePool, the upstream building block: n
-- WorkerResources of one worker class, started, joined and terminated
-- together, and map_messages to feed requests to them and get replies as
-- they come. Workers are the array part: `#pool`, `pool[i]`,
-- `for i, w in ipairs(pool)` or `for i, w in pool:workers()`.
local coproc = require "coproc"
local core = require "coproc.core"
local iterable = require "coproc.iterable"
local options = require "coproc.options"
local resource = require "coproc.resource"

local M = {}

local WRP = {}
WRP.__index = WRP
WRP.__name = "coproc.WorkerResourcePool"

--- WorkerResourcePool(n, WorkerClass, start_kwargs, opts): opts go to each
-- WorkerResource (method, messenger_type). Not started yet: call start().
function M.WorkerResourcePool(n, WorkerClass, start_kwargs, opts)
  local ni = options.integer(n)
  if not ni or ni < 1 then
    error(("bad argument #1 to 'WorkerResourcePool' (positive integer expected, got %s)"):format(options.show(n)), 2)
  end
  local tc = type(WorkerClass)
  if tc ~= "table" and tc ~= "function" then
    error(("bad argument #2 to 'WorkerResourcePool' (worker class or function expected, got %s)"):format(tc), 2)
  end
  if start_kwargs ~= nil and type(start_kwargs) ~= "table" then
    error(("bad argument #3 to 'WorkerResourcePool' (table of keyword arguments expected, got %s)")
      :format(type(start_kwargs)), 2)
  end
  opts = resource.check_options(opts, "WorkerResourcePool", 2)
  local self = setmetatable({ start_kwargs = start_kwargs or {} }, WRP)
  for i = 1, ni do self[i] = coproc.WorkerResource(WorkerClass, opts) end
  return self
end

--- Replace the kwargs start() uses (upstream set_start_kwargs).
function WRP:set_start_kwargs(kwargs) self.start_kwargs = kwargs or {} end

--- Start every worker with start_kwargs overlaid by kwargs. Returns self.
function WRP:start(kwargs)
  local kw = {}
  for k, v in pairs(self.start_kwargs) do kw[k] = v end
  for k, v in pairs(kwargs or {}) do kw[k] = v end
  for i = 1, #self do self[i]:start(kw) end
  return self
end

--- Ask every worker to close and wait for them (up to timeout seconds each;
-- nil = forever). True when all have exited.
function WRP:join(timeout)
  for i = 1, #self do
    local m = self[i].messenger
    if m then pcall(m.send_close_request, m) end
  end
  local all = true
  for i = 1, #self do
    if not self[i]:join(timeout) then all = false end
  end
  return all
end

--- Terminate every worker at once: close requests, timeout seconds
-- (default 1) for them to exit, then SIGTERM, SIGKILL; so within about
-- timeout + 0.5 s whatever the workers do. Never raises (also not for
-- workers that already died or never started).
function WRP:terminate(timeout)
  local rs = {}
  for i = 1, #self do rs[i] = self[i] end
  resource.stop_all(rs, timeout)
end

--- Wait until every worker has exited (without asking them to: see join),
-- up to timeout seconds (nil = forever). True when all have; a worker never
-- started counts as exited.
function WRP:wait_until_dead(timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
    error(("bad argument #1 to 'wait_until_dead' (non-negative number of seconds expected, got %s)")
      :format(tostring(timeout)), 2)
  end
  local deadline = timeout and core.now() + timeout
  for i = 1, #self do
    local p = rawget(self[i], "_proc")
    if p then
      local left = deadline and deadline - core.now()
      if left and left < 0 then left = 0 end
      if not p:wait(left) then return false end
    end
  end
  return true
end

--- True when every worker is alive.
function WRP:is_alive()
  for i = 1, #self do
    if not self[i]:is_alive() then return false end
  end
  return #self > 0
end

--- Iterate (i, WorkerResource).
function WRP:workers() return ipairs(self) end

--- The function fn(w, i) applied to each worker; returns the list of results.
function WRP:apply_to_workers(fn)
  local out = {}
  for i = 1, #self do out[i] = fn(self[i], i) end
  return out
end

local MAP_OPTIONS = { depth = "posint" }

--- map_messages(data, channel, opts): send each request of data (a list, an
-- iterator function returning values until nil, or a coproc.iter(...)) to
-- the workers, keeping opts.depth (default 2) requests outstanding per
-- worker, and iterate the replies as they come: `for i, reply in
-- pool:map_messages(data) do`, i is the index of the worker that replied
-- (index first, as in every coproc iterator, so a nil reply does not end
-- the loop). Replies come from the workers' send_reply on `channel`; a
-- worker that dies raises WorkerDied from the loop.
function WRP:map_messages(data, channel, opts)
  opts = options.check(opts, MAP_OPTIONS, "map_messages", 2)
  local depth = opts.depth or 2
  local pull
  if type(data) == "table" and not iterable.is_iter(data) then
    local k, n = 0, data.n or #data
    pull = function()
      if k >= n then return nil, true end
      k = k + 1
      return data[k], false
    end
  elseif type(data) == "function" or iterable.is_iter(data) then
    local it = iterable.is_iter(data) and data or iterable.iter(data)
    local src = iterable.source(it.f, it.s, it.c, it.closing)
    pull = function()
      local more, v = src.pull()
      if not more then return nil, true end
      return v, false
    end
  else
    error(("bad argument #1 to 'map_messages' (list or iterator expected, got %s)"):format(type(data)), 2)
  end
  local n = #self
  local ms, idx = {}, {}
  -- stale[m]: replies m still owes to requests of an earlier loop (left by
  -- break): they are not this loop's, and are dropped as they come
  local stale = {}
  for i = 1, n do
    local m = self[i].messenger
    if m == nil then
      error(("coproc.WorkerResourcePool: worker %d is not started (call start() first)"):format(i), 2)
    end
    ms[i], idx[m] = m, i
    stale[m] = m:remaining(channel)
  end
  local out, head, tail = {}, 1, 0      -- replies waiting to be yielded
  local exhausted = false
  local outstanding = 0

  local function feed()
    if exhausted then return end
    for i = 1, n do
      local m = ms[i]
      while m:remaining(channel) - stale[m] < depth do
        local v, ended = pull()
        if ended then exhausted = true; return end
        m:send_request(v, channel)
        outstanding = outstanding + 1
      end
    end
  end

  return function()
    while head > tail do
      feed()
      if outstanding == 0 then return nil end
      local ready = core.wait(ms)   -- (a stale reply wakes it too: dropped below)
      for r = 1, #ready do
        local m = ready[r]
        -- counted by the replies counter: a nil reply leaves a hole in the list
        local before = m:replies_received(channel)
        local list = m:receive_available(channel)
        local k = m:replies_received(channel) - before
        local count = #list
        if k > count then count = k end
        local drop = stale[m] < count and stale[m] or count
        stale[m] = stale[m] - drop
        for j = drop + 1, count do
          tail = tail + 1
          out[tail] = { idx[m], list[j] }
        end
        outstanding = outstanding - (k - drop)
      end
    end
    local e = out[head]
    out[head] = nil
    head = head + 1
    feed()
    return e[1], e[2]
  end
end

-- <close> and __gc: terminate (within about 1.5 s), never raise; a copy in
-- a forked child leaves the workers alone (see resource.stop_all).
WRP.__close = function(self) pcall(WRP.terminate, self) end
WRP.__gc = function(self) pcall(WRP.terminate, self) end

function WRP:__tostring()
  return ("coproc.WorkerResourcePool(%d workers)"):format(#self)
end

return M
