--- coproc.cqueues: coproc inside cqueues controllers. Once required, every
-- coproc call that would wait (a receive, coproc.wait, flush, a future's
-- result, coproc.sleep) yields to the controller when it runs in a
-- coroutine the controller manages (cq:wrap), as cqueues' own sockets do;
-- elsewhere it blocks as always. A thin layer over the pollable contract
-- of docs/eventloops.md:
--
--   * the default waiter (bindings/lwaiter.h) turns each wait into
--     cqueues.poll on small pollables (pollfd, events, timeout) made for
--     it, whose timeout is 0 when the wait can end at once: a message
--     another wait already read into the queue (its socket is quiet then);
--   * every controller step first writes what is corked (nothing stays
--     corked while the controller sleeps) and, when messages were queued
--     since the last step, signals a condition all such waits also poll,
--     so none sleeps on a quiet socket whose message is queued already;
--   * drive(cq, pool) runs the pool in a coroutine of cq while it has work.
--
-- A messenger is itself a cqueues pollable (pollfd, events, timeout: it
-- wakes while anything is queued); pollable(m, channel) wakes only for what
-- a receive on channel would take. coproc does not depend on cqueues; this
-- module needs it.
local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local core = require "coproc.core"

local M = {}

-- State shared by every copy of this module (busted loads modules again).
local REG_KEY = "coproc.cqueues"
local reg = debug.getregistry()
local S = reg[REG_KEY]
if not S then
  S = { progress = condition.new(), seen = core.arrivals() }
  reg[REG_KEY] = S
end

---------------------------------------------------------------- pollables

local Pollable = {}
Pollable.__index = Pollable
Pollable.__name = "coproc.cqueues.Pollable"

function Pollable:pollfd() return self.fd end
function Pollable:events() return self.ev end
function Pollable:timeout()
  if self.ready() then return 0 end
  return nil
end

-- Is the messenger gone (closed, or its fd unusable)?
local function closed(m)
  return m:is_closed()
end

-- cqueues keeps the fds it polls registered; one closed under it makes
-- the controller fail ("unable to update event disposition: Bad file
-- descriptor"). So each messenger polled here tells cqueues before its fd
-- is closed (a pool terminated from another coroutine), which also wakes
-- the coroutines polling it.
local hooked = setmetatable({}, { __mode = "k" })
local function on_close(m)
  local fd = m:fileno()
  if fd >= 0 then cqueues.cancel(fd) end
end

local function make(m, mode, channel)
  if not hooked[m] then
    hooked[m] = true
    core.on_close(m, on_close)
  end
  local ready
  if mode == "w" then
    ready = function() return closed(m) or m:unsent() == 0 end
  elseif mode == "a" then
    ready = function() return closed(m) or m:timeout() == 0 end
  else
    ready = function() return closed(m) or m:pending(channel) end
  end
  return setmetatable({ m = m, fd = m:fileno(), ev = (mode == "w" and "rw") or m:events(), ready = ready }, Pollable)
end

--- pollable(m, channel) -> an object for cqueues.poll that is ready when
-- a receive on channel would not wait (a message of it, a close request or
-- error, the connection down). Make a new one for each poll: it says what
-- to wait for at the time it is polled.
function M.pollable(m, channel)
  if type(m) ~= "userdata" or type(m.pending) ~= "function" then
    error(("bad argument #1 to 'pollable' (coproc.Messenger expected, got %s)"):format(type(m)), 2)
  end
  m:pending(channel)   -- a bad channel is an argument error here
  return make(m, "r", channel)
end

---------------------------------------------------------------- the waiter

local prev_waiter

-- req (lwaiter.h): messenger + channel / any / write, messengers, pools,
-- ready, timeout. Polls what the request waits for, plus the progress
-- condition; true once polled (the call looks again), false outside a
-- controller's own coroutine (the call blocks).
local function waiter(req)
  local cq, managed = cqueues.running()
  if not (cq and managed) then
    if prev_waiter then return prev_waiter(req) end
    return false
  end
  local objs = {}
  local function add(m, mode, channel)
    if closed(m) then return false end
    local p = make(m, mode, channel)
    if p.ready() then return false end
    objs[#objs + 1] = p
    return true
  end
  local m = req.messenger
  if m and not add(m, req.any and "a" or req.write and "w" or "r", req.channel) then return true end
  for _, mm in ipairs(req.messengers or {}) do
    if not add(mm, "a") then return true end
  end
  for _, p in ipairs(req.pools or {}) do
    for _, mm in ipairs(p:messengers()) do
      if not add(mm, "a") then return true end
    end
  end
  if req.ready and req.ready() then return true end
  if objs[1] or req.ready then objs[#objs + 1] = S.progress end
  if req.timeout then objs[#objs + 1] = req.timeout end
  cqueues.poll(table.unpack(objs))
  return true
end

if not S.installed then
  S.installed = true
  prev_waiter = core.set_waiter(waiter)
  -- Before every step: write what is corked, and wake the waits whose
  -- message some other call read into its queue meanwhile.
  local step
  step = cqueues.interpose("step", function(self, timeout)
    core.flush_all()
    local a = core.arrivals()
    if a ~= S.seen then
      S.seen = a
      S.progress:signal()
    end
    return step(self, timeout)
  end)
end

---------------------------------------------------------------- drive

local Drive = {}
Drive.__index = Drive
Drive.__name = "coproc.cqueues.Drive"

--- drive(cq, pool) -> handle: while the pool has unfinished work, a
-- coroutine of cq sends it, takes the workers' replies, replaces dead
-- workers and runs done callbacks, so futures complete while cq runs (the
-- coroutine ends when the pool is idle, and comes back with new work).
-- A done callback's error ends it and comes out of cq:loop() / cq:step().
-- handle:stop() ends it.
function M.drive(cq, pool)
  if type(cq) ~= "userdata" or type(cq.wrap) ~= "function" then
    error(("bad argument #1 to 'drive' (cqueues controller expected, got %s)"):format(type(cq)), 2)
  end
  if type(pool) ~= "table" or type(pool.pump) ~= "function" or type(pool.messengers) ~= "function" then
    error(("bad argument #2 to 'drive' (coproc.Pool expected, got %s)"):format(type(pool)), 2)
  end
  if pool._on_work then error("bad argument #2 to 'drive' (this pool is driven already)", 2) end
  local d = setmetatable({ cq = cq, pool = pool, active = true, running = false, stopped = condition.new() }, Drive)
  local function driver()
    while d.active and pool:unfinished() > 0 do
      pool:pump(0)
      if not d.active or pool:unfinished() == 0 then break end
      local objs = {}
      for _, m in ipairs(pool:messengers()) do
        if not closed(m) then objs[#objs + 1] = make(m, "a") end
      end
      objs[#objs + 1] = S.progress
      objs[#objs + 1] = d.stopped
      cqueues.poll(table.unpack(objs))
    end
    d.running = false
  end
  pool._on_work = function()
    if d.active and not d.running then
      d.running = true
      cq:wrap(driver)
    end
  end
  if pool:unfinished() > 0 then pool._on_work() end
  return d
end

function Drive:stop()
  if not self.active then return end
  self.active = false
  self.pool._on_work = nil
  self.stopped:signal()
end

function Drive:is_active() return self.active end
function Drive:__tostring()
  return ("coproc.cqueues.Drive(%s)"):format(self.active and "active" or "stopped")
end

return M
