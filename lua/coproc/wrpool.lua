--- coproc.wrpool: WorkerResourcePool, the upstream building block: n
-- WorkerResources of one worker class, started, joined and terminated
-- together, and map_messages to feed requests to them and get replies as
-- they come. Workers are the array part: `#pool`, `pool[i]`,
-- `for i, w in ipairs(pool)` or `for i, w in pool:workers()`.
local coproc = require "coproc"

local M = {}

local WRP = {}
WRP.__index = WRP
WRP.__name = "coproc.WorkerResourcePool"

--- WorkerResourcePool(n, WorkerClass, start_kwargs, opts): opts go to each
-- WorkerResource (method, messenger_type). Not started yet: call start().
function M.WorkerResourcePool(n, WorkerClass, start_kwargs, opts)
  if math.type(n) ~= "integer" or n < 1 then
    error("bad argument #1 to 'WorkerResourcePool' (positive integer expected)", 2)
  end
  if WorkerClass == nil then
    error("bad argument #2 to 'WorkerResourcePool' (worker class or function expected)", 2)
  end
  local self = setmetatable({ start_kwargs = start_kwargs or {} }, WRP)
  for i = 1, n do self[i] = coproc.WorkerResource(WorkerClass, opts) end
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

--- Terminate every worker (close request, SIGTERM, SIGKILL). Never raises
-- for workers that already died.
function WRP:terminate(timeout)
  for i = 1, #self do pcall(self[i].terminate, self[i], timeout) end
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

--- map_messages(data, channel, opts): send each request of data (a list, or
-- an iterator function returning values until nil) to the workers, keeping
-- opts.depth (default 2) requests outstanding per worker, and iterate the
-- replies as they come: `for reply, i in pool:map_messages(data) do`, i is
-- the worker's index. Replies come from the workers' send_reply on
-- `channel`; a worker that dies raises WorkerDied from the loop.
function WRP:map_messages(data, channel, opts)
  local depth = (opts and opts.depth) or 2
  local pull
  if type(data) == "table" then
    local k, n = 0, data.n or #data
    pull = function()
      if k >= n then return nil, true end
      k = k + 1
      return data[k], false
    end
  elseif type(data) == "function" then
    local ended = false
    pull = function()
      if ended then return nil, true end
      local v = data()
      if v == nil then ended = true; return nil, true end
      return v, false
    end
  else
    error("bad argument #1 to 'map_messages' (table or iterator function expected)", 2)
  end
  local n = #self
  local ms, idx = {}, {}
  for i = 1, n do ms[i] = self[i].messenger; idx[ms[i]] = i end
  local out, head, tail = {}, 1, 0      -- replies waiting to be yielded
  local exhausted = false
  local outstanding = 0

  local function feed()
    if exhausted then return end
    for i = 1, n do
      local m = ms[i]
      while m:remaining(channel) < depth do
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
      local ready = coproc.wait(ms)
      for r = 1, #ready do
        local m = ready[r]
        for _, reply in ipairs(m:receive_available(channel)) do
          tail = tail + 1
          out[tail] = { reply, idx[m] }
          outstanding = outstanding - 1
        end
      end
    end
    local e = out[head]
    out[head] = nil
    head = head + 1
    feed()
    return e[1], e[2]
  end
end

WRP.__close = function(self) pcall(WRP.terminate, self) end

function WRP:__tostring()
  return ("coproc.WorkerResourcePool(%d workers)"):format(#self)
end

return M
