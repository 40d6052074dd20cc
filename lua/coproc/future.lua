--- coproc.future: the handle Pool:submit and Pool:apply_async return
-- (concurrent.futures.Future, with multiprocessing's AsyncResult names
-- too), and coproc.wait / coproc.as_completed over futures.
-- The pool runs its dispatch loop only inside its own calls, so result(),
-- done() and the wait helpers are what make a submitted task progress while
-- the host does nothing else with the pool. Futures of several pools can be
-- waited for together: each knows its pool, and one wait covers all their
-- workers.
local core = require "coproc.core"
local errors = require "coproc.errors"
local options = require "coproc.options"

local M = {}

local Future = {}
Future.__index = Future
Future.__name = "coproc.Future"
M.Future = Future

-- f._job is the pool's job while the task runs; once it ended (settle) it
-- is the future itself, holding only what the methods read of a finished
-- job. So a kept future does not keep the job's bookkeeping (its tables,
-- the function, the arguments): a list of many done futures stays small
-- for the collector. The nil fields size the table for those up front.
-- job.cancelled is f._cancelled there (f.cancelled is the method).
function M.new(pool, job)
  return setmetatable({ _pool = pool, _job = job, _callbacks = nil,
    finished = nil, started = nil, _cancelled = nil, err = nil, results = nil }, Future)
end

--- The task of f ended (job finished): f keeps its outcome, not the job.
function M.settle(f, job)
  f.finished, f.started, f._cancelled = true, job.started, job.cancelled
  f.err, f.results = job.err, job.results
  f._job = f
end

local function was_cancelled(f)
  local j = f._job
  if j == f then return f._cancelled == true end
  return j.cancelled == true
end

function M.is_future(v) return getmetatable(v) == Future end

local function cancelled_err(e) return errors.is(e, errors.Cancelled) end

--- Block until the task finished (up to timeout seconds, nil = forever) and
-- return its result; raises the task's error (WorkerError with the worker
-- traceback, WorkerDied, Cancelled) or coproc.Timeout. A timeout leaves the
-- task running: call result() again later.
function Future:result(timeout)
  local job = self._job
  self._pool:_raise_callback_error()
  self._pool:_wait_job(job, timeout)
  if job.err then error(job.err, 0) end
  return job.results[1]
end
Future.get = Future.result   -- multiprocessing's AsyncResult.get

--- The error the task ended with (nil if it succeeded); waits like
-- result(). Raises Cancelled for a cancelled task (as result() does), and
-- Timeout.
function Future:exception(timeout)
  local job = self._job
  self._pool:_raise_callback_error()
  self._pool:_wait_job(job, timeout)
  if cancelled_err(job.err) then error(job.err, 0) end
  return job.err
end

--- Wait until the task finished or timeout seconds passed (nil: forever);
-- never raises the task's error. True when it finished (AsyncResult.wait).
function Future:wait(timeout)
  local job = self._job
  if not job.finished then
    local ok, e = pcall(self._pool._wait_job, self._pool, job, timeout)
    if not ok and not errors.is(e, errors.Timeout) then error(e, 0) end
  end
  return job.finished
end

--- True once the task finished, failed or was cancelled (never blocks).
function Future:done()
  local job = self._job
  if not job.finished then self._pool:_poll() end
  return job.finished
end
Future.ready = Future.done   -- AsyncResult.ready

--- True when the task finished without an error; a Lua error if it has not
-- finished (AsyncResult.successful).
function Future:successful()
  if not self:done() then error("coproc future: successful() on a task that is not done", 2) end
  return self._job.err == nil
end

--- True while a worker runs the task (it has started it: cancel() would
-- return false).
function Future:running()
  return not self:done() and self._pool:_job_running(self._job)
end

--- Cancel the task if no worker has started it: one still queued, or one
-- already in a worker's window that the worker has not begun (taken back
-- atomically). Returns true then, and result() raises coproc.Cancelled.
-- Returns false for a task that runs or finished (also when it finished by
-- being cancelled).
function Future:cancel()
  return self._pool:_cancel_job(self._job)
end

function Future:cancelled()
  return was_cancelled(self)
end

--- fn(future) runs in the host once the task ends (result, error or
-- cancel), during the pool call that sees it end; at once if it has ended.
-- Callbacks run in the order they were added. An error in fn is reported
-- with warn() and raised as coproc.CallbackError by the next call to the
-- pool (docs/pool.md).
function Future:add_done_callback(fn)
  local mt = getmetatable(fn)
  if type(fn) ~= "function" and not (type(fn) == "table" and mt and mt.__call) then
    error(("bad argument #1 to 'add_done_callback' (function expected, got %s)"):format(type(fn)), 2)
  end
  if self._job.finished then
    self._pool:_call_back(self, fn)
    return
  end
  local cbs = self._callbacks
  if not cbs then
    cbs = {}
    self._callbacks = cbs
  end
  cbs[#cbs + 1] = fn
end

function Future:__tostring()
  local j = self._job
  local state = was_cancelled(self) and "cancelled" or j.err and "failed" or j.finished and "done"
    or j.started and "running" or "pending"
  return ("coproc.Future(%s)"):format(state)
end

---------------------------------------------------------------- waiting on many

-- Check a list of futures for function fname.
local function futures_arg(futures, fname, level)
  if type(futures) ~= "table" then
    error(("bad argument #1 to '%s' (list of futures expected, got %s)"):format(fname, type(futures)), level + 1)
  end
  for i = 1, #futures do
    if getmetatable(futures[i]) ~= Future then
      error(("bad argument #1 to '%s' (list of futures expected; item %d is a %s)"):format(fname, i,
        type(futures[i])), level + 1)
    end
  end
end

local function check_timeout(t, fname, argn, level)
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0) then
    error(("bad argument #%d to '%s' (non-negative number of seconds expected, got %s)"):format(argn, fname,
      tostring(t)), level + 1)
  end
end

-- The distinct pools of the futures of list; a callback error left in
-- one of them is raised first.
local function pools_of(list)
  local pools, seen = {}, {}
  for i = 1, #list do
    local p = list[i]._pool
    if not seen[p] then
      seen[p] = true
      p:_raise_callback_error()
      pools[#pools + 1] = p
    end
  end
  return pools
end

-- One round over the pools of the unfinished futures (timeout as in wait);
-- in a task (coproc.async) it waits there until one of them is done.
local function pump(list, timeout)
  local pools = pools_of(list)
  if #pools == 0 then return end
  local pool = require("coproc.pool")
  local function any_done()
    for i = 1, #list do if list[i]._job.finished then return true end end
    return false
  end
  if pool._yield_round(pools, any_done, timeout) then return end
  pool.pump_many(pools, timeout)
end

local WAIT_OPTIONS = { return_when = { "all", "first", "first_error" }, timeout = "nonneg" }

local function failed(f)
  local e = f._job.err
  return e ~= nil and not cancelled_err(e)
end

--- wait(futures, opts, timeout) -> done, not_done: lists of the futures (in
-- the order given). opts.return_when: "all" (default: every future done),
-- "first" (at least one), "first_error" (one failed with an error other
-- than Cancelled, or all done). timeout (also opts.timeout; nil = forever,
-- 0 polls) ends the wait early; it never raises Timeout. The arguments may
-- come as (futures, timeout) or (futures, timeout, opts) too.
function M.wait(futures, opts, timeout)
  if type(opts) == "number" and (timeout == nil or type(timeout) == "table") then
    opts, timeout = timeout, opts
  end
  opts = options.check(opts, WAIT_OPTIONS, "wait", 2)
  if timeout == nil then timeout = opts.timeout end
  check_timeout(timeout, "wait", 3, 2)
  futures_arg(futures, "wait", 2)
  local when = opts.return_when or "all"
  local deadline = timeout and core.now() + timeout
  local polled = false
  while true do
    local done, not_done, err = {}, {}, false
    for i = 1, #futures do
      local f = futures[i]
      if f._job.finished then
        done[#done + 1] = f
        if failed(f) then err = true end
      else
        not_done[#not_done + 1] = f
      end
    end
    if #not_done == 0 or (when == "first" and #done > 0) or (when == "first_error" and err) then
      return done, not_done
    end
    local left
    if deadline then
      left = deadline - core.now()
      if left <= 0 then
        if polled then return done, not_done end
        left = 0   -- a timeout of 0 still takes the replies that are there
      end
    end
    pump(not_done, left)
    polled = true
  end
end

--- as_completed(futures, timeout): iterator over the futures as they finish
-- (those already finished first, in list order; each future once). Raises
-- coproc.Timeout from the loop when timeout seconds (for the whole loop)
-- pass before every future is done.
function M.as_completed(futures, timeout)
  futures_arg(futures, "as_completed", 2)
  check_timeout(timeout, "as_completed", 2, 2)
  local deadline = timeout and core.now() + timeout
  local pending, seen = {}, {}
  for i = 1, #futures do
    local f = futures[i]
    if not seen[f] then
      seen[f] = true
      pending[#pending + 1] = f
    end
  end
  local ready, head, tail = {}, 1, 0
  local total = #pending
  return function()
    while true do
      if head <= tail then
        local f = ready[head]
        ready[head] = nil
        head = head + 1
        return f
      end
      if #pending == 0 then return nil end
      local still = {}
      for i = 1, #pending do
        local p = pending[i]
        if p._job.finished then
          tail = tail + 1
          ready[tail] = p
        else
          still[#still + 1] = p
        end
      end
      pending = still
      if head > tail then
        local left
        if deadline then
          left = deadline - core.now()
          if left <= 0 then
            errors.raise(errors.Timeout, ("as_completed timed out after %g s (%d of %d futures not done)")
              :format(timeout, #pending, total))
          end
        end
        pump(pending, left)
      end
    end
  end
end

return M
