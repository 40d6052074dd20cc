--- coproc.future: the handle Pool:submit returns (concurrent.futures style).
-- The pool runs its dispatch loop only inside its own calls, so result(),
-- done() and wait helpers are what make a submitted task progress while the
-- host does nothing else with the pool.
local M = {}

local Future = {}
Future.__index = Future
Future.__name = "coproc.Future"

function M.new(pool, job)
  return setmetatable({ _pool = pool, _job = job }, Future)
end

function M.is_future(v) return getmetatable(v) == Future end

--- Block until the task finished (up to timeout seconds, nil = forever) and
-- return its result; raises the task's error (WorkerError with the worker
-- traceback, WorkerDied, Cancelled) or coproc.Timeout. A timeout leaves the
-- task running: call result() again later.
function Future:result(timeout)
  local job = self._job
  self._pool:_wait_job(job, timeout)
  if job.err then error(job.err, 0) end
  return job.results[1]
end

--- The error the task ended with (nil if it succeeded); waits like result().
function Future:exception(timeout)
  local job = self._job
  self._pool:_wait_job(job, timeout)
  return job.err
end

--- True once the task finished, failed or was cancelled (never blocks).
function Future:done()
  local job = self._job
  if not job.finished then self._pool:_poll() end
  return job.finished
end

--- True while a worker holds the task.
function Future:running()
  return not self:done() and self._job.started == true
end

--- Cancel the task if no worker has it yet: returns true then, and result()
-- raises coproc.Cancelled. Returns false for a task already sent to a worker
-- or finished (also when it finished by being cancelled).
function Future:cancel()
  return self._pool:_cancel_job(self._job)
end

function Future:cancelled()
  return self._job.cancelled == true
end

function Future:__tostring()
  local j = self._job
  local state = j.cancelled and "cancelled" or j.err and "failed" or j.finished and "done"
    or j.started and "running" or "pending"
  return ("coproc.Future(%s)"):format(state)
end

return M
