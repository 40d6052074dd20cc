--- coproc.pool: Pool (multiprocessing.Pool with task priorities), LazyPool
-- (forks at map time, inherits fn and items) and WorkerResourcePool (the
-- upstream building block, in coproc.wrpool).
--
-- How it works (host side). Every call turns into a *job*: a function and a
-- list of items. A job enters a priority queue (lower priority number first,
-- FIFO among equals) as one *run* of items; the dispatcher cuts batches of
-- items off the top run and sends each as one message to a worker whose
-- in-flight window has room. The window is sized from the function's measured
-- cost (worker CPU seconds per item): about `budget` seconds of work per
-- worker, at least one batch, so trivial tasks travel thousands to a message
-- and slow ones one or two at a time (a high-priority task then waits for at
-- most about one task per worker). `chunksize` is the unit batches are made
-- of; nil means automatic (guided: a batch takes at most a 1/(2n) share of
-- what is left, so the tail balances). Functions are shipped once per worker
-- (a "define" message, then batches name them by id); see
-- coproc/pool_worker.lua for the wire format.
--
-- The host sleeps in coproc.wait on all worker messengers. A worker that died
-- is replaced at once; the batches it held are requeued (`retries`) or fail
-- their job with WorkerDied. Nothing runs in the background: the pool makes
-- progress inside its own calls (map, result(), done(), ...).
local coproc = require "coproc"
local Future = require "coproc.future"
local Progress = require "coproc.progress"

local M = {}

local floor, ceil, huge = math.floor, math.ceil, math.huge
local unpack = table.unpack
local table_new = coproc.core.table_new

-- Results arrive batch by batch, out of order: a table sized up front keeps
-- them in its array part instead of a hash that grows and rehashes.
local function new_results(n)
  local t = table_new(n, 1)
  t.n = n
  return t
end

local BUDGET      = 0.004      -- seconds of estimated work in flight per worker
local MAX_BATCHES = 4          -- messages in flight per worker
local MAX_UNITS   = 256        -- chunks per message with an explicit chunksize
local MAX_AUTO    = 8192       -- items per message with automatic chunking
local FN_PRIORITY = -huge      -- "define function" is popped before any batch
local IDLE_FNS    = 16         -- functions kept in workers after their jobs end
local GRACE       = 0.5        -- seconds a closing worker gets before SIGTERM

---------------------------------------------------------------- helpers

--- A monotonic seconds clock from the core if it has one, else os.clock
-- (CPU time: only good for relative cost, so timeouts then also count the
-- seconds coproc.wait slept; see wait_clock below).
local function pick_clock()
  local core = package.loaded["coproc.core"] or {}
  for _, t in ipairs { coproc, core } do
    for _, k in ipairs { "monotonic", "clock", "now", "time" } do
      if type(t[k]) == "function" then return t[k], true end
    end
  end
  return os.clock, false
end
local clock, real_clock = pick_clock()
M._clock = clock

--- Make a coproc error object of class cls (e.g. "WorkerError") with the
-- extra fields (message among them).
local function new_error(cls, fields)
  local C = coproc[cls]
  if C ~= nil then
    local ok, e = pcall(C, fields.message, fields)
    if ok and e ~= nil then return e end
  end
  fields.class = fields.class or cls
  return setmetatable(fields, { __tostring = function(e)
    return ("%s: %s"):format(tostring(e.class), tostring(e.message))
  end })
end
M._new_error = new_error

local function is_err(e, cls)
  if coproc.is and coproc[cls] then
    local ok, r = pcall(coproc.is, e, coproc[cls])
    if ok then return r end
  end
  return type(e) == "table" and e.class == cls
end

local function check_fn(fn, what)
  local t = type(fn)
  if t ~= "function" and t ~= "string" then
    error(("bad argument #1 to '%s' (function or \"module.function\" name expected, got %s)")
      :format(what, t), 3)
  end
end

local function count_items(items, what)
  if type(items) ~= "table" then
    error(("bad argument #2 to '%s' (table expected, got %s)"):format(what, type(items)), 3)
  end
  return items.n or #items
end

-- Binary min-heap of runs ordered by (prio, seq).
local function less(a, b)
  return a.prio < b.prio or (a.prio == b.prio and a.seq < b.seq)
end
local function heap_push(h, x)
  local i = h.n + 1
  h.n = i
  while i > 1 do
    local p = i // 2
    if less(x, h[p]) then h[i] = h[p]; i = p else break end
  end
  h[i] = x
end
local function heap_pop(h)
  local n = h.n
  local top, last = h[1], h[n]
  h[n] = nil
  n = n - 1
  h.n = n
  if n > 0 then
    local i = 1
    while true do
      local c = 2 * i
      if c > n then break end
      if c < n and less(h[c + 1], h[c]) then c = c + 1 end
      if less(h[c], last) then h[i] = h[c]; i = c else break end
    end
    h[i] = last
  end
  return top
end

-- The worker target: only _ENV as upvalue, so it crosses by value cheaply;
-- the loop itself is required in the worker (same package paths as here).
local function pool_target(m, kw)
  if kw.path then package.path = kw.path end
  if kw.cpath then package.cpath = kw.cpath end
  return require("coproc.pool_worker").run(m, kw)
end

---------------------------------------------------------------- Pool

local Pool = {}
Pool.__index = Pool
Pool.__name = "coproc.Pool"
M.PoolClass = Pool

--- Pool(n, opts): n workers (default coproc.cpu_count()).
-- opts: initializer (function or name, run once in each worker with
-- initargs), initargs (list), maxtasksperchild (replace a worker after it
-- was given this many items), chunksize (default for maps; nil = auto),
-- priority (default task priority, 0), retries (times a task lost with a dead
-- worker is re-run, default 0), progress (bar on a TTY for maps),
-- prefetch (fixed number of chunks in flight per worker instead of the
-- cost-based window; 1 gives strict priority order), budget (seconds of work
-- in flight per worker, default 0.004), method ("fresh" | "inherit").
function M.Pool(n, opts)
  if type(n) == "table" and opts == nil then opts, n = n, n.n or n.processes end
  opts = opts or {}
  n = n or coproc.cpu_count()
  if math.type(n) ~= "integer" or n < 1 then
    error("bad argument #1 to 'Pool' (positive integer expected)", 2)
  end
  local self = setmetatable({
    size = n,
    method = opts.method or "fresh",
    maxtasks = opts.maxtasksperchild,
    chunksize = opts.chunksize,
    priority = opts.priority or 0,
    retries = opts.retries or 0,
    progress = opts.progress,
    prefetch = opts.prefetch,
    budget = opts.budget or BUDGET,
    max_auto = opts._max_auto or MAX_AUTO,
    max_batches = opts._max_batches or MAX_BATCHES,
    target = opts._target or pool_target,
    kwargs = {
      path = package.path, cpath = package.cpath,
      initializer = opts.initializer, initargs = opts.initargs,
    },
    workers = {}, by_m = {}, mlist = {},
    queue = { n = 0 }, jobs = {}, njobs = 0,
    fids = {}, idle = {}, next_fid = 1, next_bid = 1, seq = 0,
    startup_failures = 0, replaced = 0, deaths = 0, tasks_done = 0,
    state = "running",
    owner = coproc.getpid(),
  }, Pool)
  if self.maxtasks ~= nil and (math.type(self.maxtasks) ~= "integer" or self.maxtasks < 1) then
    error("maxtasksperchild must be a positive integer", 2)
  end
  if opts.initializer ~= nil then check_fn(opts.initializer, "Pool") end
  for _ = 1, n do self:_spawn() end
  return self
end

function Pool:_spawn()
  local res = coproc.WorkerResource(self.target, { method = self.method })
  res:start(self.kwargs)
  local w = {
    res = res, m = res.messenger, pid = res:pid(),
    inflight = {}, nb = 0, est = 0, dispatched = 0, fids = {}, replied = false,
  }
  self.workers[#self.workers + 1] = w
  self.by_m[w.m] = w
  self.mlist[#self.mlist + 1] = w.m
  return w
end

function Pool:_remove(w)
  local ws, ml = self.workers, self.mlist
  for i = #ws, 1, -1 do if ws[i] == w then table.remove(ws, i) end end
  for i = #ml, 1, -1 do if ml[i] == w.m then table.remove(ml, i) end end
  self.by_m[w.m] = nil
end

--- Pids of the current workers (they change when workers are replaced).
function Pool:pids()
  local t = {}
  for i, w in ipairs(self.workers) do t[i] = w.pid end
  return t
end

--- Counters: workers, replaced (deaths + maxtasksperchild), deaths,
-- tasks_done, queued (items not yet sent), jobs (unfinished).
function Pool:stats()
  local queued = 0
  for i = 1, self.queue.n do
    local r = self.queue[i]
    if not r.job.finished then queued = queued + r.hi - r.lo + 1 end
  end
  return { workers = #self.workers, replaced = self.replaced, deaths = self.deaths,
    tasks_done = self.tasks_done, queued = queued, jobs = self.njobs,
    last_replace_seconds = self.last_replace_seconds }
end

---------------------------------------------------------------- functions

function Pool:_ref_fn(fn)
  local rec = self.fids[fn]
  if not rec then
    rec = { id = self.next_fid, fn = fn, refs = 0 }
    self.next_fid = rec.id + 1
    self.fids[fn] = rec
  end
  if rec.refs == 0 then
    local idle = self.idle
    for i = #idle, 1, -1 do if idle[i] == rec then table.remove(idle, i) end end
  end
  rec.refs = rec.refs + 1
  return rec
end

function Pool:_unref_fn(rec)
  if rec.lazy then return end
  rec.refs = rec.refs - 1
  if rec.refs > 0 then return end
  local idle = self.idle
  idle[#idle + 1] = rec
  while #idle > IDLE_FNS do
    local old = table.remove(idle, 1)
    self.fids[old.fn] = nil
    for _, w in ipairs(self.workers) do
      if w.fids[old.id] then
        w.fids[old.id] = nil
        pcall(w.m.send_norequest, w.m, { "d", old.id })
      end
    end
  end
end

---------------------------------------------------------------- jobs

-- kind: "map" (results list), "imap" (ordered ranges), "unordered" (ranges
-- in completion order), "future" (one item).
function Pool:_new_job(kind, fn, items, n, opts, star)
  if self.state ~= "running" then
    error("coproc pool: the pool is " .. self.state .. "; no new work", 3)
  end
  opts = opts or {}
  local cs = opts.chunksize
  if cs == nil then cs = self.chunksize end
  if cs ~= nil and (math.type(cs) ~= "integer" or cs < 1) then
    error("chunksize must be a positive integer", 3)
  end
  self.seq = self.seq + 1
  local job = {
    kind = kind, star = star or false, items = items, n = n, cs = cs,
    prio = opts.priority or self.priority, seq = self.seq,
    retries = opts.retries or self.retries,
    pending = n, results = new_results(n), finished = false, started = false,
    ranges = {}, got = {}, done_lo = {}, done_n = {}, ndone = 0,
  }
  if type(job.prio) ~= "number" or job.prio ~= job.prio then
    error("priority must be a number", 3)
  end
  self:_check_deaths()
  job.fid = opts._lazy_fid or self:_ref_fn(fn)
  self.jobs[job] = true
  self.njobs = self.njobs + 1
  local want_bar = opts.progress
  if want_bar == nil then want_bar = self.progress end
  if want_bar and kind ~= "future" and n > 0 then
    job.bar = Progress.new(n, { clock = clock, stream = opts.progress_stream,
      force = opts.progress_stream ~= nil })
  end
  if n == 0 then
    self:_end_job(job)
  else
    heap_push(self.queue, { prio = job.prio, seq = job.seq, job = job, lo = 1, hi = n, tries = 0 })
    self:_dispatch()
  end
  return job
end

function Pool:_end_job(job, err)
  if job.finished then return end
  job.finished = true
  job.err = err
  self.jobs[job] = nil
  self.njobs = self.njobs - 1
  self:_unref_fn(job.fid)
  if job.bar then job.bar:finish() end
end

function Pool:_cancel_job(job)
  if job.finished or job.started then return false end
  job.cancelled = true
  self:_end_job(job, new_error("Cancelled", { message = "task was cancelled" }))
  return true
end

---------------------------------------------------------------- dispatch

function Pool:_can_send(w)
  if w.retiring then return false end
  if self.maxtasks and w.dispatched >= self.maxtasks then return false end
  if self.prefetch then return w.nb < self.prefetch end
  return w.nb == 0 or (w.nb < self.max_batches and w.est < self.budget)
end

-- Send one batch from the top run to w. Returns true if the queue changed.
function Pool:_send_batch(w, run)
  local job = run.job
  local rem = run.hi - run.lo + 1
  local cs, ema = job.cs, job.fid.ema
  local k, est
  if self.prefetch or not ema then
    k = cs or 1
    est = ema and k * ema or self.budget / 2
  else
    local free = self.budget - w.est
    if free < 0 then free = 0 end
    if cs then
      local units = floor(free / (ema * cs))
      if units < 1 then units = 1 elseif units > MAX_UNITS then units = MAX_UNITS end
      k = units * cs
    else
      k = floor(free / ema)
      local share = ceil(rem / (2 * #self.workers))
      if k > share then k = share end
      local cap = self.max_auto
      if k > cap then k = cap elseif k < 1 then k = 1 end
    end
  end
  if self.maxtasks then
    local left = self.maxtasks - w.dispatched
    if k > left then k = left end
  end
  if k > rem then k = rem end
  est = est or k * ema

  local lo = run.lo
  local bid = self.next_bid
  local fid = job.fid
  local m = w.m
  local ok, err = true, nil
  if fid.lazy then
    ok, err = pcall(m.send_request, m, { "r", bid, lo, k }, nil, job.prio)
  else
    if not w.fids[fid.id] then
      ok, err = pcall(m.send_norequest, m, { "f", fid.id, fid.fn }, nil, FN_PRIORITY)
      if ok then w.fids[fid.id] = true end
    end
    if ok then
      -- The batch is encoded straight from job.items (no copy per batch).
      ok, err = pcall(m.send_request_slice, m, { "t", bid, fid.id, job.star, k }, job.items,
        lo, lo + k - 1, nil, job.prio)
    end
  end
  if not ok then
    if is_err(err, "WorkerDied") or is_err(err, "WorkerIsDeadError") then
      self:_on_death(w, err)
    else
      heap_pop(self.queue)
      self:_end_job(job, err)   -- EncodeError and the like: this job only
    end
    return true
  end
  self.next_bid = bid + 1
  run.lo = lo + k
  if run.lo > run.hi then heap_pop(self.queue) end
  w.inflight[bid] = { job = job, lo = lo, n = k, est = est, tries = run.tries, seq = run.seq }
  w.nb = w.nb + 1
  w.est = w.est + est
  w.dispatched = w.dispatched + k
  job.started = true
  return true
end

function Pool:_dispatch()
  local q, ws = self.queue, self.workers
  -- Round-robin, one batch per worker per round, so no worker's window is
  -- filled from the top of the queue while another idles.
  local moved = true
  while moved and q.n > 0 do
    moved = false
    local nw = #ws
    for i = 1, nw do
      local w = ws[i]
      if w and self:_can_send(w) then
        local run = q[1]
        while run and run.job.finished do heap_pop(q); run = q[1] end
        if not run then return end
        if self:_send_batch(w, run) then moved = true end
      end
    end
  end
end

---------------------------------------------------------------- replies

function Pool:_on_reply(w, r)
  local bid = r[1]
  local b = w.inflight[bid]
  if not b then return end
  w.inflight[bid] = nil
  w.nb = w.nb - 1
  w.est = w.nb == 0 and 0 or w.est - b.est
  w.replied = true
  self.startup_failures = 0
  local job, nok, err = b.job, r[3], r[4]
  self.tasks_done = self.tasks_done + nok
  if nok > 0 then
    local e = r[2] / nok
    if e < 1e-8 then e = 1e-8 end
    local fid = job.fid
    fid.ema = fid.ema and (fid.ema + e) * 0.5 or e
  end
  if job.finished then return end
  if job.err_at and b.lo >= job.err_at then return end   -- imap: past its error
  if nok > 0 then
    local results, base = job.results, b.lo - 5
    for j = 5, 4 + nok do results[base + j] = r[j] end
    job.pending = job.pending - nok
    if job.kind == "imap" then
      job.ranges[b.lo] = nok
      job.got[b.lo] = nok
      if job.err_at then job.missing = job.missing - nok end
    elseif job.kind == "unordered" then
      local k = job.ndone + 1
      job.done_lo[k], job.done_n[k], job.ndone = b.lo, nok, k
    end
    if job.bar then job.bar:advance(nok) end
  end
  if err then
    local index = b.lo + nok
    self:_fail_at(job, new_error("WorkerError", {
      message = ("%s (item %d)"):format(tostring(err.message), index),
      traceback = err.traceback, pid = w.pid, index = index,
    }), index)
  elseif job.err_at then
    if job.missing <= 0 then self:_end_job(job, job.err_pending) end
  elseif job.pending == 0 then
    self:_end_job(job)
  end
end

-- A job failed at item index. map, map_unordered and futures end at once;
-- imap ends once every item before index is in, so the loop yields them
-- and then raises (a later failure at a lower index takes over).
function Pool:_fail_at(job, err, index)
  if job.kind ~= "imap" then return self:_end_job(job, err) end
  if job.err_at and job.err_at <= index then return end
  job.err_at, job.err_pending = index, err
  local have = 0
  for lo, n in pairs(job.got) do
    if lo < index then have = have + n end
  end
  job.missing = (index - 1) - have
  if job.missing <= 0 then self:_end_job(job, err) end
end

function Pool:_on_death(w, err)
  if w.dead then return end
  w.dead = true
  self:_remove(w)
  self.deaths = self.deaths + 1
  local t_death = clock()
  pcall(w.res.join, w.res, 1)
  local exitcode = select(2, pcall(w.res.exitcode, w.res))
  pcall(w.res.close, w.res)
  local fields = type(err) == "table" and err or {}
  local signal = fields.signal
  if signal == nil and math.type(exitcode) == "integer" and exitcode < 0 then signal = -exitcode end
  local q = self.queue
  for _, b in pairs(w.inflight) do
    local job = b.job
    if not job.finished then
      if b.tries < job.retries then
        heap_push(q, { prio = job.prio, seq = b.seq, job = job, lo = b.lo,
          hi = b.lo + b.n - 1, tries = b.tries + 1 })
      else
        self:_fail_at(job, new_error("WorkerDied", {
          message = ("worker %s died (%s) holding items %d..%d"):format(tostring(w.pid),
            signal and ("signal " .. signal) or ("exit code " .. tostring(exitcode)),
            b.lo, b.lo + b.n - 1),
          pid = w.pid, exitcode = exitcode, signal = signal, index = b.lo,
          unanswered = b.n,
        }), b.lo)
      end
    end
  end
  w.inflight = {}
  if self.state == "terminated" then return end
  if not w.replied then self.startup_failures = self.startup_failures + 1 end
  if self.startup_failures > 2 * self.size + 2 then
    -- Workers die before answering anything: a replacement would die too.
    self.state = "broken"
    local e = new_error("WorkerDied", { message = "pool workers keep dying at start (last: "
      .. tostring(err) .. ")", pid = w.pid, exitcode = exitcode, signal = signal })
    for job in pairs(self.jobs) do self:_end_job(job, e) end
    return
  end
  self:_spawn()
  self.replaced = self.replaced + 1
  self.last_replace_seconds = clock() - t_death
end

-- Workers that reached maxtasksperchild and have nothing in flight are
-- replaced (the new one first, so it starts while the old one exits).
function Pool:_retire()
  if not self.maxtasks or self.state == "terminated" then return end
  local ws = self.workers
  for i = #ws, 1, -1 do
    local w = ws[i]
    if w.dispatched >= self.maxtasks and w.nb == 0 and not w.retiring then
      w.retiring = true
      self:_remove(w)
      self:_spawn()
      self.replaced = self.replaced + 1
      w.res:close(GRACE)   -- close request, then SIGTERM/SIGKILL; never raises
    end
  end
end

function Pool:_drain(w)
  local m = w.m
  local ok, msgs = pcall(m.receive_available, m)
  if not ok then return self:_on_death(w, msgs) end
  for i = 1, #msgs do self:_on_reply(w, msgs[i]) end
  if #msgs == 0 and not w.dead then
    -- coproc.wait said ready but nothing came: the peer may be gone.
    local alive = select(2, pcall(w.res.is_alive, w.res))
    if alive == false then
      self:_on_death(w, new_error("WorkerDied", { message = "worker exited", pid = w.pid }))
    end
  end
end

--- One round: send what fits, sleep until a worker has replies or died (up
-- to timeout seconds; 0 polls), take the replies, send again.
function Pool:_pump(timeout)
  self:_dispatch()
  if #self.mlist == 0 then return end
  local ready = coproc.wait(self.mlist, timeout)
  for i = 1, #ready do
    local w = self.by_m[ready[i]]
    if w and not w.dead then self:_drain(w) end
  end
  self:_retire()
  self:_dispatch()
  return #ready > 0
end

function Pool:_poll() self:_pump(0) end

-- Notice workers that died while idle (one poll, no sleeping) so new work
-- does not go to them.
function Pool:_check_deaths()
  if #self.mlist == 0 then return end
  local ready = coproc.wait(self.mlist, 0)
  for i = 1, #ready do
    local w = self.by_m[ready[i]]
    if w and not w.dead then self:_drain(w) end
  end
end

local function any_inflight(self)
  for _, w in ipairs(self.workers) do if w.nb > 0 then return true end end
  return false
end

-- Pump until done(job) is true. Raises coproc.Timeout after timeout seconds.
function Pool:_wait_until(done, timeout, what)
  local deadline = timeout and clock() + timeout
  local slept, t_os = 0, os.time()
  while not done() do
    local t
    if deadline then
      local left = real_clock and deadline - clock() or timeout - slept
      if left <= 0 or (not real_clock and os.time() - t_os > timeout + 1) then
        error(new_error("Timeout", { message = ("%s timed out after %g s"):format(what, timeout) }), 3)
      end
      t = left
    end
    if self.queue.n == 0 and not any_inflight(self) and not done() then
      error("coproc pool: internal error: waiting on work that is neither queued nor running", 3)
    end
    local got = self:_pump(t)
    if not got and t then slept = slept + t end
  end
end

function Pool:_wait_job(job, timeout)
  if job.finished then return end
  self:_wait_until(function() return job.finished end, timeout, "task")
end

---------------------------------------------------------------- public calls

local function map_common(self, kind, fn, items, opts, star, what)
  check_fn(fn, what)
  local n = count_items(items, what)
  opts = opts or {}
  local job = self:_new_job(kind, fn, items, n, opts, star)
  return job, opts
end

local function finish_map(self, job, timeout)
  local ok, e = pcall(self._wait_job, self, job, timeout)
  if not ok then
    if not job.finished then self:_end_job(job, e) end   -- timeout: drop the job
    error(e, 0)
  end
  if job.err then error(job.err, 0) end
  return job.results
end

--- map(fn, items, opts) -> results (a list with .n; nil results kept as holes).
-- opts: chunksize, priority, timeout, progress, retries. Raises the first
-- error: WorkerError (worker traceback, .index of the item), WorkerDied,
-- Timeout (the map is abandoned; the pool stays usable).
function Pool:map(fn, items, opts)
  local job
  job, opts = map_common(self, "map", fn, items, opts, false, "map")
  return finish_map(self, job, opts.timeout)
end

--- starmap(fn, arglists, opts): fn(table.unpack(args)) for each args.
function Pool:starmap(fn, items, opts)
  local job
  job, opts = map_common(self, "map", fn, items, opts, true, "starmap")
  return finish_map(self, job, opts.timeout)
end

-- The iterator's closing value: leaving the loop early drops the rest.
local function closer(self, job)
  return setmetatable({}, { __close = function()
    if not job.finished then self:_end_job(job, new_error("Cancelled",
      { message = "iteration stopped" })) end
  end })
end

--- imap(fn, items, opts): ordered lazy iterator: `for i, result in pool:imap(f, xs)`.
-- Yields the index first so nil results do not end the loop. Errors are
-- raised at the failing item, after the results before it.
-- opts.timeout bounds the wait for each next result.
function Pool:imap(fn, items, opts)
  local job
  job, opts = map_common(self, "imap", fn, items, opts, opts and opts.star, "imap")
  local nexti, upto = 1, 0
  local ranges = job.ranges
  local function have()
    return nexti <= upto or ranges[nexti] ~= nil or job.finished
  end
  local function iter()
    if nexti > job.n then return nil end
    if nexti > upto then
      local k = ranges[nexti]
      if k == nil then
        if not job.finished then self:_wait_until(have, opts.timeout, "imap") end
        k = ranges[nexti]
        if k == nil then
          if job.err then error(job.err, 0) end
          if nexti > job.n then return nil end
          k = 1   -- finished without ranges recorded: impossible for imap
        end
      end
      ranges[nexti] = nil
      upto = nexti + k - 1
    end
    local i = nexti
    nexti = i + 1
    return i, job.results[i]
  end
  return iter, nil, nil, closer(self, job)
end

--- map_unordered(fn, items, opts): iterator yielding (index, result) as
-- results come in. Same errors and options as imap (imap_unordered alias).
function Pool:map_unordered(fn, items, opts)
  local job
  job, opts = map_common(self, "unordered", fn, items, opts, opts and opts.star, "map_unordered")
  local k, pos, left = 0, 0, 0   -- range k of job.done_*, item pos, left in it
  local function have() return job.ndone > k or job.finished end
  local function iter()
    if left == 0 then
      if job.ndone <= k then
        if job.err then error(job.err, 0) end
        if job.finished then return nil end
        self:_wait_until(have, opts.timeout, "map_unordered")
        if job.ndone <= k then
          if job.err then error(job.err, 0) end
          return nil
        end
      end
      k = k + 1
      pos, left = job.done_lo[k], job.done_n[k]
      job.done_lo[k], job.done_n[k] = nil, nil
    end
    local i = pos
    pos, left = pos + 1, left - 1
    return i, job.results[i]
  end
  return iter, nil, nil, closer(self, job)
end
Pool.imap_unordered = Pool.map_unordered

--- submit(fn, args, opts) -> Future. args: a list (nil holes need args.n).
-- opts: priority (lower runs sooner; overtakes queued lower-priority work),
-- retries.
function Pool:submit(fn, args, opts)
  check_fn(fn, "submit")
  args = args or {}
  if type(args) ~= "table" then
    error(("bad argument #2 to 'submit' (table of arguments expected, got %s)"):format(type(args)), 2)
  end
  local job = self:_new_job("future", fn, { args }, 1, opts, true)
  return Future.new(self, job)
end

--- apply(fn, ...) -> fn(...) run in a worker.
function Pool:apply(fn, ...)
  return self:submit(fn, table.pack(...)):result()
end

--- Wait for futures (from this pool): returns the list of those done, after
-- at least one is (or timeout; nil = forever; 0 polls).
function Pool:wait_any(futures, timeout)
  local function done_list()
    local d = {}
    for _, f in ipairs(futures) do if f._job.finished then d[#d + 1] = f end end
    return d
  end
  if #done_list() == 0 and #futures > 0 then
    if timeout == 0 then self:_poll()
    else
      local ok, e = pcall(self._wait_until, self, function() return #done_list() > 0 end, timeout, "wait")
      if not ok and not is_err(e, "Timeout") then error(e, 0) end
    end
  end
  return done_list()
end

---------------------------------------------------------------- shutdown

--- No more work may be submitted; what was submitted still runs (join()).
function Pool:close()
  if self.state == "running" then self.state = "closed" end
end

--- Wait for every submitted job (up to timeout), then stop the workers.
-- Needs close() first, like multiprocessing.
function Pool:join(timeout)
  if self.state == "running" then
    error("coproc pool: join() needs close() first", 2)
  end
  if self.njobs > 0 then
    self:_wait_until(function() return self.njobs == 0 end, timeout, "join")
  end
  self:_stop_workers(GRACE)
end

function Pool:_stop_workers(grace)
  local ws = self.workers
  self.workers, self.mlist, self.by_m = {}, {}, {}
  self.state = "terminated"
  for _, w in ipairs(ws) do pcall(w.m.send_close_request, w.m) end
  for _, w in ipairs(ws) do pcall(w.m.flush, w.m) end
  for _, w in ipairs(ws) do w.res:close(grace) end
end

--- Stop now: unfinished jobs end with coproc.Cancelled, workers are closed
-- (SIGTERM then SIGKILL for busy ones). Never raises. Also __close/__gc.
function Pool:terminate()
  if self.state == "terminated" then return end
  -- A copy of the pool in a forked child ("inherit" workers) owns nothing.
  if self.owner ~= coproc.getpid() then return end
  for job in pairs(self.jobs) do
    self:_end_job(job, new_error("Cancelled", { message = "pool terminated" }))
  end
  self:_stop_workers(0.05)
end

Pool.__close = function(self) pcall(Pool.terminate, self) end
Pool.__gc = function(self) pcall(Pool.terminate, self) end

function Pool:__tostring()
  return ("coproc.Pool(%d workers, %s)"):format(self.size, self.state)
end

---------------------------------------------------------------- LazyPool

local LazyPool = {}
LazyPool.__index = LazyPool
LazyPool.__name = "coproc.LazyPool"

--- LazyPool(n, opts): forks n workers for each map, with the "inherit" start
-- method: fn and items are inherited by the fork, never encoded or sent, so
-- any closure and any item (userdata too) works; only indices go out and
-- results come back. opts: chunksize, retries, progress, budget.
function M.LazyPool(n, opts)
  if type(n) == "table" and opts == nil then opts, n = n, n.n end
  opts = opts or {}
  n = n or coproc.cpu_count()
  if math.type(n) ~= "integer" or n < 1 then
    error("bad argument #1 to 'LazyPool' (positive integer expected)", 2)
  end
  return setmetatable({ size = n, opts = opts }, LazyPool)
end

local function lazy_engine(self, fn, items, star, opts)
  local lazy = { fn = fn, items = items, star = star }
  local o = {}
  for k, v in pairs(self.opts) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  o.method = "inherit"
  o._target = function(m, kw) return require("coproc.pool_worker").run(m, kw, lazy) end
  o.initializer, o.initargs = nil, nil
  local engine = M.Pool(self.size, o)
  return engine, o
end

local function lazy_map(self, fn, items, opts, star, what)
  check_fn(fn, what)
  local n = count_items(items, what)
  local engine, o = lazy_engine(self, fn, items, star, opts)
  local ok, res = pcall(function()
    o._lazy_fid = { id = 0, lazy = true }
    local job = engine:_new_job("map", nil, items, n, o, star)
    return finish_map(engine, job, o.timeout)
  end)
  engine:terminate()
  if not ok then error(res, 0) end
  return res
end

--- map(fn, items, opts) -> results, like Pool:map.
function LazyPool:map(fn, items, opts) return lazy_map(self, fn, items, opts, false, "map") end
function LazyPool:starmap(fn, items, opts) return lazy_map(self, fn, items, opts, true, "starmap") end

--- map_unordered(fn, items, opts): iterator of (index, result) as they come;
-- the workers end with the loop.
function LazyPool:map_unordered(fn, items, opts)
  check_fn(fn, "map_unordered")
  count_items(items, "map_unordered")
  local engine, o = lazy_engine(self, fn, items, opts and opts.star or false, opts)
  o._lazy_fid = { id = 0, lazy = true }
  local iter, _, _, inner = engine:map_unordered(fn, items, o)
  local function wrapped()
    local ok, i, r = pcall(iter)
    if not ok then engine:terminate(); error(i, 0) end
    if i == nil then engine:terminate() end
    return i, r
  end
  return wrapped, nil, nil, setmetatable({}, { __close = function()
    getmetatable(inner).__close(inner)
    engine:terminate()
  end })
end
LazyPool.imap_unordered = LazyPool.map_unordered

function LazyPool:__tostring() return ("coproc.LazyPool(%d workers)"):format(self.size) end

---------------------------------------------------------------- exports

M.WorkerResourcePool = function(...)
  return require("coproc.wrpool").WorkerResourcePool(...)
end

return setmetatable(M, { __call = function(_, ...) return M.Pool(...) end })
