--- coproc.async: coproc's own small scheduler, for one host that serves
-- many workers from straight-line code per worker. coproc.async(fn, ...)
-- makes a task (a coroutine); inside it every coproc call that would wait
-- (a receive, coproc.wait, flush, a future's result, coproc.sleep) yields to
-- the scheduler instead, through the task's waiter (bindings/lwaiter.h).
-- The scheduler waits for what all its tasks wait for at once, in one call
-- to core.wait_for (a single epoll wait, no polling), and resumes each task
-- whose wait may be over; the call then looks again and goes on. Outside a
-- task nothing changes: the calls block as they always did.
--
-- The scheduler runs inside coproc.run_all() and inside task:result() or
-- coproc.sleep() called outside a task; there is one per process (per Lua
-- state). docs/eventloops.md is the contract.
local core = require "coproc.core"
local errors = require "coproc.errors"
local options = require "coproc.options"

local M = {}

local set_waiter, wait_for, now = core.set_waiter, core.wait_for, core.now
local yield, resume, status, running = coroutine.yield, coroutine.resume, coroutine.status, coroutine.running
local isyieldable, pack, unpack = coroutine.isyieldable, table.pack, table.unpack
local huge = math.huge

local Task = {}
Task.__index = Task
Task.__name = "coproc.Task"
M.Task = Task

local TOKEN = {}                                    -- what a task's waiter yields
local by_co = setmetatable({}, { __mode = "k" })    -- coroutine -> its task
local live = {}                                     -- unfinished tasks, in creation order
local runnable = {}                                 -- tasks to resume, in order
local running_loop = false                          -- a scheduler loop is on the stack
-- Failed tasks nobody has waited for (no result() on them) yet. Once no
-- task can run (each had its chance to ask), the oldest ends the
-- scheduler loop with its error.
local orphans = {}

-- The waiter of every task: hand the request to the scheduler, which
-- resumes the task once it may be met.
local function waiter(req)
  yield(TOKEN, req)
  return true
end

local function check_timeout(t, fname, argn)
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0) then
    error(("bad argument #%d to '%s' (non-negative number of seconds expected, got %s)"):format(argn, fname,
      tostring(t)), 3)
  end
end

--- async(fn, ...) -> Task: fn(...) will run as a task of coproc's
-- scheduler (from the next run_all(), task:result() or sleep() outside a
-- task, or at once when the scheduler is already running).
function M.async(fn, ...)
  local mt = getmetatable(fn)
  if type(fn) ~= "function" and not (type(fn) == "table" and mt and mt.__call) then
    error(("bad argument #1 to 'async' (function expected, got %s)"):format(type(fn)), 2)
  end
  local args = pack(...)
  local co = coroutine.create(function() return fn(unpack(args, 1, args.n)) end)
  local t = setmetatable({ co = co, state = "runnable" }, Task)
  by_co[co] = t
  set_waiter(waiter, co)
  live[#live + 1] = t
  runnable[#runnable + 1] = t
  return t
end

-- The task end: its results, or its error with the task's traceback.
local function finish(t, ok, r)
  if ok then
    t.state, t.results = "done", r
  else
    t.state, t.err = "failed", r[2]
    t.traceback = debug.traceback(t.co, type(r[2]) == "string" and r[2] or tostring(r[2]))
    orphans[#orphans + 1] = t
  end
  t.req, t.deadline = nil, nil
  set_waiter(nil, t.co)
  for i = #live, 1, -1 do
    if live[i] == t then table.remove(live, i) break end
  end
end

local function step(t)
  t.state, t.req, t.deadline = "running", nil, nil
  local r = pack(resume(t.co))
  if not r[1] then return finish(t, false, r) end
  if status(t.co) == "dead" then
    table.remove(r, 1)
    r.n = r.n - 1
    return finish(t, true, r)
  end
  if r[2] == TOKEN then
    local req = r[3]
    t.state, t.req = "waiting", req
    t.deadline = req.timeout and now() + req.timeout
  else
    t.state = "runnable"      -- a plain coroutine.yield(): its turn comes again
    runnable[#runnable + 1] = t
  end
end

local function wake(t)
  if t.state == "waiting" then
    t.state, t.req, t.deadline = "runnable", nil, nil
    runnable[#runnable + 1] = t
  end
end

-- Tasks whose request says ready() now.
local function wake_ready()
  for _, t in ipairs(live) do
    local req = t.req
    if t.state == "waiting" and req.ready and req.ready() then wake(t) end
  end
end


local function raise_orphan()
  while orphans[1] do
    local t = table.remove(orphans, 1)
    if not t.awaited then
      t.awaited = true
      error(t.err, 0)
    end
  end
end

-- The conditions of every waiting task, as core.wait_for takes them.
local function gather(conds, owner, pools)
  local n = 0
  local function add(t, m, ch, mode)
    n = n + 1
    conds[3 * n - 2], conds[3 * n - 1], conds[3 * n] = m, ch, mode
    owner[n] = t
  end
  local next_deadline = huge
  for _, t in ipairs(live) do
    local req = t.req
    if t.state == "waiting" then
      if t.deadline and t.deadline < next_deadline then next_deadline = t.deadline end
      local m = req.messenger
      if m then
        add(t, m, req.channel, req.any and "a" or req.write and "w" or "r")
      end
      if req.messengers then
        for _, mm in ipairs(req.messengers) do add(t, mm, nil, "a") end
      end
      if req.pools then
        for _, p in ipairs(req.pools) do
          pools[p] = true
          for _, mm in ipairs(p:messengers()) do add(false, mm, nil, "a") end
        end
      end
    end
  end
  return n, next_deadline
end

-- Run the scheduler until stop() is true (then true), or until the
-- absolute time `deadline` (then false).
local function run(stop, deadline, what)
  if running_loop then
    error(("coproc.%s: the scheduler is already running (a done callback?); wait in a task instead"):format(what), 3)
  end
  running_loop = true
  local ok, r = pcall(function()
    local conds, owner = {}, {}
    while true do
      while runnable[1] do
        local list = runnable
        runnable = {}
        for _, t in ipairs(list) do
          if t.state == "runnable" then step(t) end
        end
        wake_ready()
      end
      raise_orphan()
      if stop() then return true end
      local pools = {}
      for i = #conds, 1, -1 do conds[i] = nil end
      local n, next_deadline = gather(conds, owner, pools)
      -- (the tasks' own deadlines only: the run's timeout wakes nobody)
      if n == 0 and next_deadline == huge then
        error(("coproc.%s: every task waits and nothing can wake them (%d task(s) waiting on each other)")
          :format(what, #live), 0)
      end
      if deadline and deadline < next_deadline then next_deadline = deadline end
      local timeout = next_deadline < huge and math.max(0, next_deadline - now()) or nil
      local ready = wait_for(conds, n, timeout)
      if next(pools) then
        for p in pairs(pools) do p:_pump(0) end   -- its callback errors go to the task that waits
      end
      for _, i in ipairs(ready) do
        local t = owner[i]
        if t then wake(t) end
      end
      local t_now = now()
      for _, t in ipairs(live) do
        if t.state == "waiting" and t.deadline and t.deadline <= t_now then wake(t) end
      end
      wake_ready()
      if deadline and t_now >= deadline and not runnable[1] then return stop() end
    end
  end)
  running_loop = false
  if not ok then error(r, 0) end
  return r
end

--- The unfinished tasks (tests cancel what a failed test left).
function M._live()
  local t = {}
  for i, task in ipairs(live) do t[i] = task end
  return t
end

local function current_task()
  local co = running()
  return by_co[co]
end
M.current_task = current_task

--- run_all(timeout): run the scheduler until every task has ended. A task
-- error that nobody waits for (no task:result() on it) is raised at once;
-- the other tasks stay as they are (another run_all() goes on with them).
-- Raises coproc.Timeout after timeout seconds (nil: no limit). Inside a
-- task: waits until every other task has ended.
function M.run_all(timeout)
  check_timeout(timeout, "run_all", 1)
  local me = current_task()
  local function all_done()
    return #live == 0 or (#live == 1 and live[1] == me)
  end
  if me then
    if not all_done() then me.joining = true; waiter { ready = all_done, timeout = timeout } end
    if not all_done() then
      errors.raise(errors.Timeout, ("run_all timed out after %g s (%d task(s) not done)"):format(timeout, #live - 1))
    end
    return
  end
  local deadline = timeout and now() + timeout
  if not run(all_done, deadline, "run_all") then
    errors.raise(errors.Timeout, ("run_all timed out after %g s (%d task(s) not done)"):format(timeout, #live))
  end
end

local function outcome(t)
  if t.state == "failed" then error(t.err, 0) end
  if t.state == "cancelled" then errors.raise(errors.Cancelled, "task was cancelled") end
  return unpack(t.results, 1, t.results.n)
end

local function finished(t)
  return t.state == "done" or t.state == "failed" or t.state == "cancelled"
end

--- The task's results once it has ended (raises its error, or Cancelled).
-- Inside a task, waits there (the others go on); outside, runs the
-- scheduler until this task has ended. Raises coproc.Timeout after timeout
-- seconds (the task goes on).
function Task:result(timeout)
  check_timeout(timeout, "result", 1)
  self.awaited = true
  if finished(self) then return outcome(self) end
  local me = current_task()
  if me == self then error("coproc task: result() of the running task would wait for itself", 2) end
  local function done() return finished(self) end
  if me then
    local deadline = timeout and now() + timeout
    while not done() do
      local left = deadline and deadline - now()
      if left and left <= 0 then break end
      waiter { ready = done, timeout = left }
    end
  else
    run(done, timeout and now() + timeout, "result")
  end
  if not done() then
    errors.raise(errors.Timeout, ("task result timed out after %g s"):format(timeout))
  end
  return outcome(self)
end

--- True once the task has ended (returned, failed or was cancelled).
function Task:done()
  return finished(self)
end

--- Stop a task that has not ended: its coroutine is closed (its pending
-- <close> variables run) and result() raises coproc.Cancelled. True when it
-- was cancelled; false when it had ended or is the running task.
function Task:cancel()
  if finished(self) or self.state == "running" then return false end
  coroutine.close(self.co)
  self.state = "cancelled"
  self.req, self.deadline = nil, nil
  set_waiter(nil, self.co)
  for i = #live, 1, -1 do
    if live[i] == self then table.remove(live, i) break end
  end
  return true
end

function Task:__tostring()
  return ("coproc.Task(%s)"):format(self.state)
end

--- sleep(seconds): in a task (or another scheduler's coroutine with a
-- waiter) wait there; elsewhere block, the messengers still reading and
-- writing (interruptible by Ctrl-C).
function M.sleep(seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 then
    error(("bad argument #1 to 'sleep' (non-negative number of seconds expected, got %s)"):format(options.show(seconds)), 2)
  end
  local w = isyieldable() and core.waiter()
  if w then
    local deadline = now() + seconds
    while true do
      local left = deadline - now()
      if left <= 0 then return end
      if not w { timeout = left } then
        seconds = left
        break
      end
    end
  end
  core.sleep(seconds)
end

return M
