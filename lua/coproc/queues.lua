--- coproc.queues: the Python coproc's queues as plain Lua data structures
-- (no processes involved): PriorityQueue (lower priority first, FIFO among
-- equals), MultiQueue (one FIFO per channel) and PriorityMultiQueue (one
-- priority queue per channel). The messenger's own queues are in C
-- (src/pqueue.c); these are for a program's own bookkeeping, with the same
-- ordering rules. Items may be any value, nil included. Channels are any
-- value but nil (nil is the default channel, as for messengers).
local heap = require "coproc.heap"

local M = {}

local huge = math.huge
local DEFAULT = setmetatable({}, { __tostring = function() return "default channel" end })

local function check_priority(p, level)
  if p == nil then return huge end
  if type(p) ~= "number" or p ~= p then
    error(("bad priority (a number expected, got %s)"):format(p ~= p and "NaN" or type(p)), level + 1)
  end
  return p
end

---------------------------------------------------------------- PriorityQueue

local PQ = {}
PQ.__index = PQ
PQ.__name = "coproc.PriorityQueue"

--- PriorityQueue(): an empty queue.
function M.PriorityQueue()
  return setmetatable({ n = 0, seq = 0 }, PQ)
end

local function before(a, b)
  if a.p ~= b.p then return a.p < b.p end
  return a.s < b.s
end

--- put(item, priority): priority nil means +inf (last); lower comes out first.
function PQ:put(item, priority)
  local e = { v = item, p = check_priority(priority, 2), s = self.seq + 1 }
  self.seq = e.s
  heap.push(self, e, before)
end

--- get() -> item, priority: the first item (a Lua error when empty).
function PQ:get()
  if self.n == 0 then error("get from an empty coproc.PriorityQueue", 2) end
  local top = heap.pop(self, before)
  return top.v, top.p
end

--- peek() -> item, priority of the first item without taking it (nothing when empty).
function PQ:peek()
  local top = self[1]
  if self.n > 0 then return top.v, top.p end
end

function PQ:size() return self.n end
PQ.__len = PQ.size
function PQ:empty() return self.n == 0 end

--- get_all() -> list of every item, in order (the queue is then empty), with .n.
function PQ:get_all()
  local out, k = {}, 0
  while self.n > 0 do k = k + 1; out[k] = self:get() end
  out.n = k
  return out
end

function PQ:clear()
  for i = self.n, 1, -1 do self[i] = nil end
  self.n = 0
end

function PQ:__tostring() return ("coproc.PriorityQueue(%d items)"):format(self.n) end

---------------------------------------------------------------- per-channel queues

-- A queue per channel, made on first use: kind(put-arity) decides which.
local function multi(name, new_queue, with_priority)
  local MQ = {}
  MQ.__index = MQ
  MQ.__name = "coproc." .. name

  local function key(ch)
    if ch == nil then return DEFAULT end
    if ch ~= ch then error("bad channel (NaN cannot name a channel)", 4) end
    return ch
  end

  local function queue(self, ch, create)
    local k = key(ch)
    local q = self.q[k]
    if not q and create then
      q = new_queue()
      self.q[k] = q
      self.order[#self.order + 1] = k
    end
    return q
  end

  if with_priority then
    --- put(item, channel, priority)
    function MQ:put(item, channel, priority)
      check_priority(priority, 2)
      queue(self, channel, true):put(item, priority)
    end
  else
    --- put(item, channel)
    function MQ:put(item, channel)
      queue(self, channel, true):put(item)
    end
  end

  --- get(channel) -> the first item of that channel (a Lua error when empty).
  function MQ:get(channel)
    local q = queue(self, channel, false)
    if not q or q:empty() then
      error(("get from an empty channel (%s) of a coproc.%s"):format(tostring(key(channel)), name), 2)
    end
    return q:get()
  end

  function MQ:peek(channel)
    local q = queue(self, channel, false)
    if q then return q:peek() end
  end

  --- size(channel) -> items of that channel; size() -> items of all channels.
  function MQ:size(...)
    if select("#", ...) == 0 then
      local n = 0
      for _, q in pairs(self.q) do n = n + q:size() end
      return n
    end
    local q = queue(self, (...), false)
    return q and q:size() or 0
  end
  MQ.__len = function(self) return self:size() end

  function MQ:empty(...) return self:size(...) == 0 end

  --- get_all(channel) -> list of that channel's items, in order, with .n.
  function MQ:get_all(channel)
    local q = queue(self, channel, false)
    if not q then return { n = 0 } end
    return q:get_all()
  end

  --- channels() -> the channels that ever had an item, in first-use order
  -- (the default channel, nil, cannot be listed and is left out).
  function MQ:channels()
    local out = {}
    for _, k in ipairs(self.order) do if k ~= DEFAULT then out[#out + 1] = k end end
    return out
  end

  function MQ:clear()
    self.q, self.order = {}, {}
  end

  function MQ:__tostring() return ("coproc.%s(%d items)"):format(name, self:size()) end

  return function() return setmetatable({ q = {}, order = {} }, MQ) end
end

---------------------------------------------------------------- FIFO

local FIFO = {}
FIFO.__index = FIFO

local function new_fifo() return setmetatable({ head = 1, tail = 0 }, FIFO) end
function FIFO:put(item) self.tail = self.tail + 1; self[self.tail] = { v = item } end
function FIFO:get()
  local e = self[self.head]
  self[self.head] = nil
  self.head = self.head + 1
  return e.v
end
function FIFO:peek() if self.tail >= self.head then return self[self.head].v end end
function FIFO:size() return self.tail - self.head + 1 end
function FIFO:empty() return self.tail < self.head end
function FIFO:get_all()
  local out, k = {}, 0
  while not self:empty() do k = k + 1; out[k] = self:get() end
  out.n = k
  return out
end

--- MultiQueue(): one FIFO per channel (put(item, channel), get(channel), ...).
M.MultiQueue = multi("MultiQueue", new_fifo, false)
--- PriorityMultiQueue(): one priority queue per channel (put(item, channel, priority), ...).
M.PriorityMultiQueue = multi("PriorityMultiQueue", M.PriorityQueue, true)

return M
