--- coproc.pool: Pool (multiprocessing.Pool with task priorities), LazyPool
-- (forks at map time, inherits fn and items) and WorkerResourcePool (the
-- upstream building block, in coproc.wrpool). docs/pool.md is the contract.
--
-- How it works (host side). Every call turns into a *job*: a function and a
-- list of items. A job enters a priority queue (lower priority number first,
-- FIFO among equals, lower item index first within a job) as one *range* of
-- items; the dispatcher cuts batches off the top range and sends each as one
-- message to a worker whose in-flight window has room. The window is sized
-- from the function's measured cost (worker CPU seconds per item): about
-- `budget` seconds of work per worker, at least one batch, so trivial tasks
-- travel thousands to a message and slow ones one or two at a time.
-- `chunksize` is the unit batches are made of; either way a batch takes at
-- most a 1/(2n) share of what is left of its job, so the tail balances.
--
-- Functions. Each call encodes its function once (so an EncodeError comes
-- before anything is sent, and the upvalues are those of the moment of the
-- call); a worker is sent a definition only when it does not hold one with
-- the same bytes, and decodes a fresh instance per job (coproc/pool_worker.lua
-- has the wire format).
--
-- Faults. A worker records in a shared slot which item it is running, so a
-- worker that dies is blamed for exactly that item; the items it held but
-- had not started, and those whose results died with it, are run again
-- without counting as retries. Dead workers are replaced, at most
-- max_restarts times in restart_window seconds; past that the pool gives up
-- on its pending work, naming the last cause, and the next call tries again.
--
-- The host sleeps in coproc.wait on all worker messengers. Nothing runs in
-- the background: the pool makes progress inside its own calls (map,
-- result(), done(), ...).
local coproc = require "coproc"
local Future = require "coproc.future"
local Progress = require "coproc.progress"
local iterable = require "coproc.iterable"
local options = require "coproc.options"
local heap = require "coproc.heap"
local resource = require "coproc.resource"

local M = {}

local floor, ceil, huge = math.floor, math.ceil, math.huge
local isyieldable = coroutine.isyieldable
local core = coproc.core
local table_new, encode, wait_ready = core.table_new, core.encode, core.wait
local decode_into = core.decode_into
local note_progress = core.note_progress
local clock = core.now
M._clock = clock

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
local MAX_UNSENT  = 4 << 20    -- bytes waiting for a worker before it gets no more
local FN_PRIORITY = -huge      -- "define function" is popped before any batch
local IDLE_FNS    = 16         -- definitions kept in workers after their jobs end
local MAX_ENDED   = 32         -- ended jobs a worker is told about in one go
local GRACE       = 0.5        -- seconds a closing worker gets before SIGTERM
local RESTARTS_PER_WORKER = 10 -- default max_restarts = this * n ...
local RESTART_WINDOW = 5       -- ... within this many seconds
local BUFFERSIZE  = 16384      -- items of an iterator read ahead and not yet yielded

---------------------------------------------------------------- helpers

--- Make a coproc error object of class cls (e.g. "WorkerError") with the
-- extra fields (message among them).
local function new_error(cls, fields)
  return coproc[cls](fields.message, fields)
end
M._new_error = new_error

local function is_err(e, cls)
  return coproc.is(e, coproc[cls])
end

local function check_fn(fn, what, level)
  local t = type(fn)
  if t ~= "function" and t ~= "string" then
    error(("bad argument #1 to '%s' (function or \"module.function\" name expected, got %s)")
      :format(what, t), level + 1)
  end
end

local function count_items(items, what, level)
  if type(items) ~= "table" then
    error(("bad argument #2 to '%s' (table expected, got %s)"):format(what, type(items)), level + 1)
  end
  local n = items.n
  if n == nil then return #items end
  n = options.integer(n)
  if not n or n < 0 then
    error(("bad argument #2 to '%s' (items.n must be a non-negative integer)"):format(what), level + 1)
  end
  return n
end

-- Binary min-heap of ranges ordered by (prio, seq, lo): priority first, then
-- the older job, then the lower items (a requeued range goes before the rest
-- of its job).
local function less(a, b)
  if a.prio ~= b.prio then return a.prio < b.prio end
  if a.seq ~= b.seq then return a.seq < b.seq end
  return a.lo < b.lo
end
local function heap_push(h, x) heap.push(h, x, less) end
local function heap_pop(h) return heap.pop(h, less) end

-- Take range r out of the queue: at once when it is on top, else it is
-- marked dead and dropped when it comes up (the dispatcher skips it).
local function heap_drop(h, r)
  if h[1] == r then heap_pop(h) else r.dead = true end
end

-- What state fn can keep in a worker between calls: "none" (no upvalue but
-- an _ENV that is the globals: one decoded instance can serve every call),
-- "scalars" (its upvalues are numbers, strings, booleans or nil: the worker
-- reuses an instance as long as they still hold the values it was sent) or
-- false (a table or function upvalue, an _ENV of its own included: a fresh
-- instance for every call).
local GLOBALS = debug.getregistry()[2]   -- LUA_RIDX_GLOBALS: what the codec sends as GLOBALS
local function fn_state(fn)
  if type(fn) ~= "function" or debug.getinfo(fn, "S").what == "C" then return "none" end
  local kind = "none"
  for i = 1, huge do
    local name, v = debug.getupvalue(fn, i)
    if name == nil then return kind end
    if name ~= "_ENV" or not rawequal(v, GLOBALS) then
      local t = type(v)
      if t == "table" or t == "function" or t == "userdata" or t == "thread" then return false end
      kind = "scalars"
    end
  end
end

-- The worker target: only _ENV as upvalue, so it crosses by value cheaply;
-- the loop itself is required in the worker (same package paths as here).
local function pool_target(m, kw)
  if kw.path then package.path = kw.path end
  if kw.cpath then package.cpath = kw.cpath end
  return require("coproc.pool_worker").run(m, kw)
end

-- Functions an "inherit" pool's workers hold in their copy of the host's
-- state: those given in opts.functions, the functions among the locals
-- and upvalues of every function on the stack when the pool is made (and
-- the fields of those that are small tables), and the global functions.
-- Returns fn -> id and id -> fn; the workers inherit the second.
local SCAN_FIELDS = 64   -- fields looked at in one table
local function inherited_functions(extra, level)
  local ids, byid, n = {}, {}, 0
  local function add(f)
    if type(f) == "function" and not ids[f] then
      n = n + 1
      ids[f], byid[n] = n, f
    end
  end
  local function add_fields(t)
    if type(t) ~= "table" then return end
    local k, seen = next(t), 0
    while k ~= nil and seen < SCAN_FIELDS do
      local v = rawget(t, k)
      add(v)
      seen = seen + 1
      k = next(t, k)
    end
  end
  local function add_value(v)
    add(v)
    add_fields(v)
  end
  if extra then for _, f in pairs(extra) do add(f) end end
  for lv = level + 1, huge do
    local info = debug.getinfo(lv, "f")
    if not info then break end
    for i = 1, huge do
      local name, v = debug.getlocal(lv, i)
      if name == nil then break end
      add_value(v)
    end
    local f = info.func
    for i = 1, huge do
      local name, v = debug.getupvalue(f, i)
      if name == nil then break end
      if name ~= "_ENV" then add_value(v) end
    end
  end
  for _, v in pairs(_G) do add(v) end
  return ids, byid
end

---------------------------------------------------------------- Pool

local Pool = {}
Pool.__index = Pool
Pool.__name = "coproc.Pool"
M.PoolClass = Pool

local POOL_OPTIONS = {
  n = "posint", processes = "posint",
  initializer = "fn", initargs = "table", maxtasksperchild = "posint",
  chunksize = "posint", priority = "number", retries = "nonnegint", progress = "boolean",
  prefetch = "posint", budget = "nonneg", method = { "fresh", "inherit" },
  max_restarts = "nonnegint", restart_window = "nonneg", buffersize = "posint", functions = "table",
  _target = "any", _max_auto = "posint", _max_batches = "posint", _lazy_fid = "any",
  timeout = "nonneg", star = "boolean", progress_stream = "any", trust = { "code", "data" },
  _resource = "any", _stop_all = "any", max_frame = "posint",
}
M._POOL_OPTIONS = POOL_OPTIONS  -- coproc.mpi.Pool takes the same options

--- Pool(n, opts): n workers (default coproc.cpu_count()). See docs/pool.md
-- for the options.
function M.Pool(n, opts)
  if type(n) == "table" and opts == nil then opts, n = n, n.n or n.processes end
  opts = options.check(opts, POOL_OPTIONS, "Pool", 2)
  if n == nil then n = coproc.cpu_count() end
  local ni = options.integer(n)
  if not ni or ni < 1 then
    error(("bad argument #1 to 'Pool' (positive integer expected, got %s)"):format(options.show(n)), 2)
  end
  n = ni
  if opts.max_frame and (opts.max_frame < 64 or opts.max_frame > 0xffffffff) then
    error(("bad option 'max_frame' to 'Pool' (64 .. 2^32-1 bytes expected, got %s)"):format(
      tostring(opts.max_frame)), 2)
  end
  if opts.functions and opts.method ~= "inherit" then
    error("bad option 'functions' to 'Pool' (only with method = \"inherit\")", 2)
  end
  local self = setmetatable({
    size = n,
    method = opts.method or "fresh",
    trust = opts.trust or "code",
    maxtasks = opts.maxtasksperchild,
    chunksize = opts.chunksize,
    priority = opts.priority or 0,
    retries = opts.retries or 0,
    progress = opts.progress,
    prefetch = opts.prefetch,
    budget = opts.budget or BUDGET,
    max_restarts = opts.max_restarts or RESTARTS_PER_WORKER * n,
    restart_window = opts.restart_window or RESTART_WINDOW,
    max_auto = opts._max_auto or MAX_AUTO,
    max_batches = opts._max_batches or MAX_BATCHES,
    target = opts._target or pool_target,
    -- Where workers come from (coproc.mpi: ranks): a WorkerResource-like
    -- constructor, and how to stop a list of them.
    new_resource = opts._resource or coproc.WorkerResource,
    stop_all = opts._stop_all or resource.stop_all,
    buffersize = opts.buffersize or BUFFERSIZE,
    max_frame = opts.max_frame,
    kwargs = {
      path = package.path, cpath = package.cpath,
      initializer = opts.initializer, initargs = opts.initargs, max_frame = opts.max_frame,
      trust = opts.trust,
    },
    workers = {}, by_m = {}, mlist = {},
    queue = { n = 0 }, jobs = {}, njobs = 0,
    defs_by_code = {}, defs_by_name = {}, idle = {}, cost = setmetatable({}, { __mode = "k" }),
    next_def = 1, next_bid = 1, seq = 0,
    restarts = {}, replaced = 0, deaths = 0, tasks_done = 0,
    state = "running",
    owner = coproc.getpid(),
    due = {},          -- futures whose done callbacks are to run
    abandoned = {},    -- jobs whose imap / map_unordered loop was dropped
    cb_errors = {},    -- CallbackErrors not yet raised
  }, Pool)
  if self.method == "inherit" and not opts._target then
    self.inherit_ids, self.kwargs.inherited = inherited_functions(opts.functions, 2)
  end
  -- A pool that cannot start all its workers (fd limit, ...) stops the ones
  -- it started before raising.
  local ok, err = pcall(function() for _ = 1, n do self:_spawn() end end)
  if not ok then
    self:_stop_workers(0.05)
    error(err, 2)
  end
  return self
end

function Pool:_spawn()
  local res = self.new_resource(self.target, { method = self.method, _status = true, trust = self.trust })
  res:start(self.kwargs)
  -- Tickets need the page a worker shares with the host: a worker without
  -- one (an MPI rank) gets batches with ticket 0, which it runs whole.
  local tickets = {}
  if res._proc then for t = 64, 1, -1 do tickets[#tickets + 1] = t end end
  if self.max_frame then res.messenger:set_max_frame(self.max_frame) end
  local w = {
    res = res, m = res.messenger, pid = res:pid(), proc = res._proc,
    name = res.describe and res:describe() or ("worker " .. tostring(res:pid())),
    tickets = tickets, -- free tickets (see _steal)
    inflight = {},     -- bid -> batch {job, lo, n, est, tries}
    batches = 0,       -- batches in flight
    work = 0,          -- estimated seconds of work in flight
    dispatched = 0,    -- items given to it (maxtasksperchild)
    defs = {},         -- definition id -> true once sent
    ended = {},        -- ids of ended jobs to tell it about
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
-- tasks_done, queued (items not yet sent; an iterator's unread items are
-- not counted), jobs (unfinished), state.
function Pool:stats()
  local queued = 0
  for i = 1, self.queue.n do
    local r = self.queue[i]
    if not (r.job.finished or r.dead or r.frontier) then queued = queued + r.hi - r.lo + 1 end
  end
  return { workers = #self.workers, replaced = self.replaced, deaths = self.deaths,
    tasks_done = self.tasks_done, queued = queued, jobs = self.njobs, state = self.state,
    last_replace_seconds = self.last_replace_seconds }
end

---------------------------------------------------------------- functions

-- The definition of fn as it is now: encoded here (EncodeError before
-- anything is sent), shared with earlier calls when the bytes are the same.
function Pool:_ref_def(fn)
  local def
  if type(fn) == "string" then
    def = self.defs_by_name[fn]
    if not def then
      def = { id = self.next_def, kind = "name", data = fn, shared = "none", refs = 0, costkey = fn }
      self.defs_by_name[fn] = def
      self.next_def = def.id + 1
    end
  else
    local ok, bytes = pcall(encode, fn)
    if ok then
      def = self.defs_by_code[bytes]
      if not def then
        def = { id = self.next_def, kind = "code", data = bytes, shared = fn_state(fn), refs = 0 }
        self.defs_by_code[bytes] = def
        self.next_def = def.id + 1
      end
    else
      def = self:_inherited_def(fn, bytes)
    end
    def.costkey = fn
  end
  if def.refs == 0 then
    local idle = self.idle
    for i = #idle, 1, -1 do if idle[i] == def then table.remove(idle, i) end end
  end
  def.refs = def.refs + 1
  return def
end

-- A function that cannot be sent by value: an "inherit" pool's workers
-- use their inherited copy when the pool found it at its start (see
-- inherited_functions); otherwise the EncodeError says what to use.
function Pool:_inherited_def(fn, err)
  local id = self.inherit_ids and self.inherit_ids[fn]
  if not id then
    if self.method == "inherit" and is_err(err, "EncodeError") then
      err = new_error("EncodeError", { message = tostring(err.message) .. " (a Pool with method = \"inherit\" "
        .. "uses its workers' inherited copy only of functions that existed when it was made; "
        .. "for a function made later use coproc.LazyPool, which forks at each call)", cause = err })
    end
    error(err, 0)
  end
  local key = "\0inherit:" .. id
  local def = self.defs_by_name[key]
  if not def then
    def = { id = self.next_def, kind = "inherit", data = id, shared = "none", refs = 0, key = key }
    self.defs_by_name[key] = def
    self.next_def = def.id + 1
  end
  return def
end

function Pool:_unref_def(def)
  if def.lazy then return end
  def.refs = def.refs - 1
  if def.refs > 0 then return end
  local idle = self.idle
  idle[#idle + 1] = def
  while #idle > IDLE_FNS do
    local old = table.remove(idle, 1)
    if old.kind == "name" then self.defs_by_name[old.data] = nil
    elseif old.kind == "inherit" then self.defs_by_name[old.key] = nil
    else self.defs_by_code[old.data] = nil end
    for _, w in ipairs(self.workers) do
      if w.defs[old.id] then
        w.defs[old.id] = nil
        pcall(w.m.send_norequest, w.m, { "d", old.id })
      end
    end
  end
end

-- Cost estimate (worker CPU seconds per item) of a job's function: kept per
-- function value, so a closure called again with other upvalues starts
-- from what was learnt.
local function cost_of(self, job) return self.cost[job.costkey] end
local function learn_cost(self, job, c)
  local key = job.costkey
  if key == nil then return end
  local old = self.cost[key]
  self.cost[key] = old and (old + c) * 0.5 or c
end

---------------------------------------------------------------- jobs

local JOB_OPTIONS = {
  chunksize = "posint", priority = "number", timeout = "nonneg", retries = "nonnegint",
  progress = "boolean", progress_stream = "any", star = "boolean", buffersize = "posint",
  _lazy_fid = "any",
}

-- Revive a pool that gave up: the restart history starts over and missing
-- workers are started again.
function Pool:_revive()
  self.state = "running"
  self.restarts = {}
  while #self.workers < self.size do self:_spawn() end
end

-- kind: "map" (results list), "imap" (ordered ranges), "unordered" (ranges
-- in completion order), "future" (one item). opts are checked already.
--
-- items is a list of n items, or nil with src an iterable source: then the
-- job reads its items as batches are cut (a *frontier* range lo = next
-- unread item, hi = huge, in the queue), into job.items by index, and
-- drops each item once its result is in. job.held counts the items read
-- and not yet released (yielded by imap / map_unordered, answered for
-- map): at buffersize the frontier leaves the queue ("parked") and comes
-- back when half of that is released, so memory stays bounded whatever the
-- length of the iterator.
function Pool:_new_job(kind, fn, items, n, opts, star, what, level, src)
  if self.reading_items then
    if src then src.close() end
    error(("coproc pool: '%s' called from inside an items iterator of the same pool "
      .. "(the pool is in the middle of sending work; compute the items first, "
      .. "or use another pool)"):format(what), level + 1)
  end
  self:_raise_callback_error()
  self:_reap_abandoned()
  if self.state == "broken" then self:_revive() end
  if self.state ~= "running" then
    if src then src.close() end
    error(("coproc pool: the pool is %s; no new work (in '%s')"):format(self.state, what), level + 1)
  end
  local cs = opts.chunksize
  if cs == nil then cs = self.chunksize end
  self.seq = self.seq + 1
  local job = {
    kind = kind, star = star or false, items = items, n = n, chunksize = cs,
    prio = opts.priority or self.priority, seq = self.seq,
    retries = opts.retries or self.retries,
    pending = n, results = src and {} or new_results(n), finished = false, started = false,
    sent_to = {},
  }
  -- what the results of each kind are tracked with (_on_reply)
  if kind == "imap" then job.ranges = {} end
  if kind == "map" or kind == "imap" then job.got = {} end
  if kind == "unordered" then job.done_lo, job.done_n, job.ndone = {}, {}, 0 end
  if src then
    job.src, job.items, job.open, job.n, job.pending = src, {}, true, 0, 0
    job.held, job.floor = 0, 1
    job.bufsize = opts.buffersize or self.buffersize
  end
  self:_check_deaths()
  if opts._lazy_fid then
    job.def = opts._lazy_fid
    job.costkey = opts._lazy_fid
  else
    local ok, def = pcall(self._ref_def, self, fn)
    if not ok then
      if src then src.close() end
      error(def, 0)
    end
    job.def = def
    job.costkey = def.costkey
  end
  self.jobs[job] = true
  self.njobs = self.njobs + 1
  local want_bar = opts.progress
  if want_bar == nil then want_bar = self.progress end
  if want_bar and kind ~= "future" and not src and n > 0 then
    job.bar = Progress.new(n, { clock = clock, stream = opts.progress_stream,
      force = opts.progress_stream ~= nil })
  end
  if src then
    self:_push_frontier(job)
    self:_dispatch()
  elseif n == 0 then
    self:_end_job(job)
  else
    heap_push(self.queue, { prio = job.prio, seq = job.seq, job = job, lo = 1, hi = n, tries = 0 })
    self:_dispatch()
  end
  self:_run_callbacks()
  if self._on_work then self._on_work(self) end   -- a loop that drives the pool (coproc.luv)
  return job
end

function Pool:_push_frontier(job)
  local r = { prio = job.prio, seq = job.seq, job = job, lo = job.n + 1, hi = huge, tries = 0, frontier = true }
  job.frontier = r
  heap_push(self.queue, r)
end

-- k items of an iterator job are released (yielded, or answered for map);
-- a parked frontier comes back once half the buffer is free. dispatch:
-- send at once (from the consumer; replies are followed by a dispatch).
function Pool:_release(job, k, dispatch)
  local held = job.held - k
  job.held = held
  if job.parked and held <= job.bufsize // 2 then
    job.parked = false
    if not job.finished and not job.err_at and job.open then
      self:_push_frontier(job)
      if dispatch then self:_dispatch() end
    end
  end
end

function Pool:_end_job(job, err)
  if job.finished then return end
  job.finished = true
  job.err = err
  note_progress()   -- a wait for it in another loop's coroutine may end now
  self.jobs[job] = nil
  self.njobs = self.njobs - 1
  -- Workers that made an instance of a stateful function for this job may
  -- drop it: they are told with their next batch.
  if job.def.shared ~= "none" then
    for w in pairs(job.sent_to) do
      if not w.dead then
        local e = w.ended
        e[#e + 1] = job.seq
        if #e >= MAX_ENDED then
          w.ended = {}
          pcall(w.m.send_norequest, w.m, { "e", e })
        end
      end
    end
  end
  job.sent_to = nil
  self:_unref_def(job.def)
  if job.bar then job.bar:finish() end
  if job.src then
    job.src.close()
    job.open = false
    if job.frontier then heap_drop(self.queue, job.frontier); job.frontier = nil end
    job.items = {}
    if job.kind == "map" then job.results.n = job.n end
  end
  local f = job.future
  if f then
    Future.settle(f, job)
    if f._callbacks then self.due[#self.due + 1] = f end
  end
end

---------------------------------------------------------------- callbacks

-- Done callbacks run in the host, inside the pool call that saw their
-- future finish, once that call's bookkeeping is done (never in the middle
-- of a dispatch or a drain), in the order the futures finished. A callback
-- that raises does not stop the others: its error is reported with warn()
-- and kept, and the next call to the pool that adds or waits for work
-- raises it as a coproc.CallbackError (value, traceback, future).
function Pool:_run_callbacks()
  local due = self.due
  if due[1] == nil or self.in_callbacks then return end
  self.in_callbacks = true
  local i = 1
  while due[i] ~= nil do
    local f = due[i]
    due[i] = false
    local cbs = f._callbacks
    f._callbacks = nil
    for _, cb in ipairs(cbs or {}) do self:_call_back(f, cb) end
    i = i + 1
  end
  self.due = {}
  self.in_callbacks = false
end

local function cb_handler(e)
  return { value = e, traceback = debug.traceback(tostring(e), 2) }
end

function Pool:_call_back(f, cb)
  local ok, e = xpcall(cb, cb_handler, f)
  if ok then return end
  local msg = type(e.value) == "table" and rawget(e.value, "message") or e.value
  local ce = new_error("CallbackError", { message = "error in a done callback: " .. tostring(msg),
    value = e.value, traceback = e.traceback, future = f })
  warn("coproc: ", tostring(ce))
  self.cb_errors[#self.cb_errors + 1] = ce
end

-- Raise the oldest callback error not yet raised (see _run_callbacks).
function Pool:_raise_callback_error()
  local ce = self.cb_errors[1]
  if ce then
    table.remove(self.cb_errors, 1)
    error(ce, 0)
  end
end

---------------------------------------------------------------- cancel

-- Cancel a task (a future's job) that no worker has started: one still in
-- the queue, or one in a worker's window whose batch the worker has not
-- claimed yet (its ticket's limit goes to 0 with a compare-and-swap, so the
-- worker skips it; lbatch.h). A task sent without a ticket (all 64 out) or
-- already claimed is running: false.
function Pool:_cancel_job(job)
  if job.finished then return false end
  local w = job.batch_w
  local b = w and not w.dead and w.inflight[job.batch_bid]
  if b and b.n > 0 then
    if b.ticket == 0 or w.proc:truncate(b.ticket, 0) ~= 0 then return false end
    b.n = 0
  end
  job.cancelled = true
  self:_end_job(job, new_error("Cancelled", { message = "task was cancelled" }))
  self:_run_callbacks()
  return true
end

-- True while a worker runs the task (it has claimed it).
function Pool._job_running(_, job)
  if job.finished or not job.started then return false end
  local w = job.batch_w
  local b = w and not w.dead and w.inflight[job.batch_bid]
  if not b or b.n == 0 then return false end
  if b.ticket == 0 then return true end
  local claimed = w.proc:ticket(b.ticket)
  return claimed > 0
end

---------------------------------------------------------------- dispatch

-- A ticket for the next batch to w (0 when all are out: that batch's tail
-- cannot be taken back). See _steal.
local function take_ticket(w)
  local free = w.tickets
  local t = free[#free]
  if t == nil then return 0 end
  free[#free] = nil
  return t
end

local function give_ticket(w, t)
  if t > 0 then w.tickets[#w.tickets + 1] = t end
end

function Pool:_can_send(w)
  if w.retiring or w.dead then return false end
  if self.maxtasks and w.dispatched >= self.maxtasks then return false end
  -- A worker that is not reading (stopped, busy) gets nothing more: sends
  -- never wait for room, so a call's deadline holds.
  local unsent = w.m.unsent
  if unsent and unsent(w.m) > MAX_UNSENT then return false end
  if self.prefetch then return w.batches < self.prefetch end
  return w.batches == 0 or (w.batches < self.max_batches and w.work < self.budget)
end

-- How many items of range r the next batch for w takes, and their estimated
-- cost: about the worker's free share of the budget by the measured cost, in
-- whole chunks when chunksize is given, and never more than a 1/(2n) share
-- of what is left of the job, so the tail spreads over the workers. Work
-- stealing (_steal) then evens out what estimates get wrong.
function Pool:_batch_size(w, r)
  local job = r.job
  local rem
  if r.frontier then
    rem = job.bufsize - job.held   -- an iterator: what the buffer has room for
    if rem < 1 then rem = 1 end
  else
    rem = r.hi - r.lo + 1
  end
  local cs, cost = job.chunksize, cost_of(self, job)
  local unit = cs or 1
  local k
  if self.prefetch or not cost then
    k = unit
  else
    local free = self.budget - w.work
    if free < 0 then free = 0 end
    local units = floor(free / (cost * unit))
    local cap = cs and MAX_UNITS or self.max_auto
    if units > cap then units = cap elseif units < 1 then units = 1 end
    local share = ceil(ceil(rem / (2 * #self.workers)) / unit)
    if units > share then units = share end
    k = units * unit
  end
  if self.maxtasks then
    local left = self.maxtasks - w.dispatched
    if k > left then k = left end
  end
  if k > rem then k = rem end
  return k, cost and k * cost or self.budget / 2
end

-- Read up to k items of an iterator job into job.items at lo..: how many
-- (0 once it is done), or nil when the iterator raised (the job then
-- fails with that error).
function Pool:_read_items(job, r, lo, k)
  self.reading_items = true   -- the iterator runs inside a dispatch: see _new_job
  local ok, got = pcall(iterable.fill, job.src, job.items, lo, k)
  self.reading_items = false
  if not ok then
    self:_end_job(job, got)
    return nil
  end
  job.n = lo + got - 1
  job.pending = job.pending + got
  job.held = job.held + got
  if got < k then job.open = false end   -- the iterator ended
  if got == 0 then
    heap_drop(self.queue, r)
    job.frontier = nil
    if job.pending == 0 and not job.err_at then self:_end_job(job) end
  end
  return got
end

-- An EncodeError from sending a batch of k items from lo: the items sit in
-- the message from slot 9 on, so the path's first step names the item.
-- Rewrites the message to name the item and the path within it, and
-- returns the item's index (nil when the error is not about an item).
local function item_of_encode_error(err, lo, k)
  local msg = tostring(err.message)
  local slot, rest = msg:match("%(at %[(%d+)%](.-)%)")
  local j = slot and tonumber(slot) - 8
  if not j or j < 1 or j > k then return nil end
  local index = lo + j - 1
  local at = rest ~= "" and (" (at %s)"):format(rest) or ""
  msg = msg:gsub(" ?%(at %[%d+%].-%)", function() return at end, 1)
  err.index = index
  err.message = ("%s (item %d)"):format(msg, index)
  return index
end

-- Send one batch from the top range to w. Returns true if the queue changed.
function Pool:_send_batch(w, r)
  local job = r.job
  local k, est = self:_batch_size(w, r)
  local lo = r.lo
  if r.frontier then
    local got = self:_read_items(job, r, lo, k)
    if not got or got == 0 then return true end
    if got < k then
      local cost = cost_of(self, job)
      k, est = got, cost and got * cost or est
    end
  end
  local bid = self.next_bid
  local def = job.def
  local m = w.m
  local ticket = take_ticket(w)
  if ticket > 0 then w.proc:set_ticket(ticket, k) end
  local ok, err = true, nil
  if def.lazy then
    ok, err = pcall(m.send_request, m, { "r", bid, lo, k, ticket }, nil, job.prio)
  else
    if not w.defs[def.id] then
      ok, err = pcall(m.send_norequest, m, { "f", def.id, def.kind, def.data, def.shared }, nil, FN_PRIORITY)
      if ok then w.defs[def.id] = true end
    end
    if ok then
      local ended = false
      if #w.ended > 0 then ended = w.ended end
      -- The batch is encoded straight from job.items (no copy per batch).
      ok, err = pcall(m.send_request_slice, m, { "t", bid, def.id, job.seq, job.star, ended, ticket, k },
        job.items, lo, lo + k - 1, nil, job.prio)
      if ok and ended then w.ended = {} end
    end
  end
  if not ok then
    give_ticket(w, ticket)
    if is_err(err, "WorkerDied") or is_err(err, "WorkerIsDeadError") or not m:is_connected() then
      if r.frontier then
        -- the items read stay with the job, as a range of their own
        r.lo = lo + k
        self:_requeue(job, lo, lo + k - 1, 0)
      end
      self:_on_death(w, err)
    else
      -- An item that cannot be encoded: the job fails at that item, as if
      -- a worker had raised there (map and imap still deliver the items
      -- before it, and raise the lowest failing item); the pool goes on.
      local index = type(err) == "table" and item_of_encode_error(err, lo, k)
      if not index then
        heap_drop(self.queue, r)
        self:_end_job(job, err)
      else
        if r.frontier then
          -- the items read stay with the job, as a range of their own
          r.lo = lo + k
          self:_requeue(job, lo, lo + k - 1, r.tries or 0)
        end
        self:_fail_at(job, err, index)
      end
    end
    return true
  end
  self.next_bid = bid + 1
  r.lo = lo + k
  if r.frontier then
    if not job.open then
      heap_drop(self.queue, r)
      job.frontier = nil
    elseif job.held >= job.bufsize then
      heap_drop(self.queue, r)
      job.frontier, job.parked = nil, true
    end
  elseif r.lo > r.hi then
    heap_pop(self.queue)
  end
  if job.kind == "future" then job.batch_w, job.batch_bid = w, bid end
  w.inflight[bid] = { job = job, lo = lo, n = k, off = 0, est = est, tries = r.tries, ticket = ticket }
  w.batches = w.batches + 1
  w.work = w.work + est
  w.dispatched = w.dispatched + k
  job.started = true
  job.sent_to[w] = true
  return true
end

-- Work stealing. When nothing is left to send and a worker is idle, the
-- worker with the most items it has not started gives back about half of
-- them: whole batches it has not begun, or the tail of the batch it runs
-- (in whole chunks), by lowering the limit on the batch's ticket (the
-- worker claims each item on it before running it, lbatch.h). The items go
-- back to the queue and out to the idle worker. So neither a window of
-- several batches nor a batch of many items leaves one worker with the
-- slow tasks while another idles.
function Pool:_steal()
  local nidle = 0
  for _, w in ipairs(self.workers) do
    if w.batches == 0 and self:_can_send(w) then nidle = nidle + 1 end
  end
  local took = false
  for _ = 1, nidle do
    -- the donor: most unstarted items
    local donor, most, list
    for _, w in ipairs(self.workers) do
      if w.batches > 0 then
        local total, bs = 0, {}
        for bid, b in pairs(w.inflight) do
          if b.ticket > 0 and not b.job.finished then
            local claimed, limit = w.proc:ticket(b.ticket)
            local unit = b.job.chunksize or 1
            local keep = ceil(claimed / unit) * unit   -- the running chunk stays
            if keep < limit then
              total = total + (limit - keep)
              bs[#bs + 1] = { bid = bid, b = b, keep = keep, limit = limit, unit = unit }
            end
          end
        end
        if total > 0 and (not most or total > most) then donor, most, list = w, total, bs end
      end
    end
    if not donor then break end
    -- the worker runs lower (priority, bid) first: take from the other end
    table.sort(list, function(x, y)
      if x.b.job.prio ~= y.b.job.prio then return x.b.job.prio > y.b.job.prio end
      return x.bid > y.bid
    end)
    local need = ceil(most / 2)
    for _, e in ipairs(list) do
      if need <= 0 then break end
      local b = e.b
      local want = e.limit - need
      if want < e.keep then want = e.keep end
      want = ceil(want / e.unit) * e.unit
      if want < e.limit then
        local nl = donor.proc:truncate(b.ticket, want)
        if nl < e.limit then
          local cost = cost_of(self, b.job)
          self:_requeue(b.job, b.lo + nl, b.lo + e.limit - 1, b.tries)
          need = need - (e.limit - nl)
          if cost then
            donor.work = donor.work - (e.limit - nl) * cost
            if donor.work < 0 then donor.work = 0 end
          end
          b.n = nl
          took = true
        end
      end
    end
  end
  return took
end

function Pool:_dispatch(stolen)
  local q, ws = self.queue, self.workers
  -- Rounds of one batch per worker, idle workers first in each round, so
  -- no worker's window is filled from the top of the queue while another
  -- idles.
  local moved = true
  while moved and q.n > 0 do
    moved = false
    local nw = #ws
    for pass = 1, 2 do
      for i = 1, nw do
        local w = ws[i]
        if w and (w.batches == 0) == (pass == 1) and self:_can_send(w) then
          local r = q[1]
          while r and (r.dead or r.job.finished or (r.job.err_at and r.lo >= r.job.err_at)) do
            heap_pop(q)
            r = q[1]
          end
          if not r then break end
          if r.job.err_at and r.hi >= r.job.err_at then r.hi = r.job.err_at - 1 end
          if self:_send_batch(w, r) then moved = true end
        end
      end
    end
  end
  if q.n == 0 and not stolen and self:_steal() then return self:_dispatch(true) end
end

---------------------------------------------------------------- replies

-- The error a worker reported for item index of job (err from pool_worker).
local function task_error(w, err, index)
  local value = err.value
  if value == nil and type(err.class) == "string" and coproc[err.class] then
    -- a coproc error raised in the worker is one here too (a Timeout stays a Timeout)
    local f = {}
    if type(err.fields) == "table" then for k, v in pairs(err.fields) do f[k] = v end end
    value = coproc[err.class](err.message, f)
  end
  local fields = {
    remote_message = err.message, traceback = err.traceback, pid = w.pid, index = index,
    value = value, remote_class = err.class,
  }
  if err.kind == "encode" then
    fields.message = ("%s (item %d)"):format(tostring(err.message), index)
    return new_error("EncodeError", fields)
  elseif err.kind == "decode" then
    fields.message = ("%s (item %d)"):format(tostring(err.message), index)
    return new_error("ProtocolError", fields)
  end
  local what = err.class and (err.class .. ": " .. tostring(err.message)) or tostring(err.message)
  fields.message = ("%s: %s (item %d)"):format(w.name, what, index)
  return new_error("WorkerError", fields)
end

-- nok results of job for items lo.. came in (in r from r[5] on, unless
-- stored: already in job.results).
function Pool:_took_results(job, lo, nok, r, stored)
  if not stored then
    local results, base = job.results, lo - 5
    for j = 5, 4 + nok do results[base + j] = r[j] end
  end
  job.pending = job.pending - nok
  local src = job.src
  if src then
    local items = job.items
    for i = lo, lo + nok - 1 do items[i] = nil end
  end
  if job.kind == "imap" or job.kind == "map" then
    if job.kind == "imap" then job.ranges[lo] = nok end
    local got = job.got
    got[lo] = nok
    if job.err_at then job.missing = job.missing - nok end
    if src then
      -- keep only the ranges past the answered prefix (bounded memory)
      local f = job.floor
      local g = got[f]
      while g do
        got[f] = nil
        f = f + g
        g = got[f]
      end
      job.floor = f
      if job.kind == "map" then self:_release(job, nok) end
    end
  elseif job.kind == "unordered" then
    local k = job.ndone + 1
    job.done_lo[k], job.done_n[k], job.ndone = lo, nok, k
  end
  if job.bar then job.bar:advance(nok) end
end

-- A part of batch b's results (a batch whose results together exceed a
-- frame, pool_worker.lua): the next nok items of the batch; the batch
-- stays in flight, its final reply counts from the item after them.
function Pool:_on_part(b, nok, stored, r)
  local job, lo = b.job, b.lo + b.off
  b.off = b.off + nok
  self.tasks_done = self.tasks_done + nok
  if job.finished or (job.err_at and lo >= job.err_at) then return end
  if job.err_at and lo + nok > job.err_at then nok = job.err_at - lo end
  if nok > 0 then self:_took_results(job, lo, nok, r, stored) end
end

-- r = {bid, seconds, nok, err, r1..r_nok}; stored: the results are already
-- in the job's results table (_on_raw). err == true: a part (_on_part).
function Pool:_on_reply(w, r, stored)
  local bid = r[1]
  local b = w.inflight[bid]
  if not b then return end
  local job, nok, err = b.job, r[3], r[4]
  if err == true then return self:_on_part(b, nok, stored, r) end
  w.inflight[bid] = nil
  w.batches = w.batches - 1
  w.work = w.batches == 0 and 0 or w.work - b.est
  give_ticket(w, b.ticket)
  self.tasks_done = self.tasks_done + nok
  local lo = b.lo + b.off
  if nok > 0 then
    local c = r[2] / nok
    if c < 1e-8 then c = 1e-8 end
    learn_cost(self, job, c)
  end
  if job.finished then return end
  if job.err_at and lo >= job.err_at then return end   -- past its error
  if job.err_at and lo + nok > job.err_at then nok = job.err_at - lo; err = false end
  if nok > 0 then self:_took_results(job, lo, nok, r, stored) end
  if err then
    local index = lo + nok
    self:_fail_at(job, task_error(w, err, index), index)
  elseif job.err_at then
    if job.missing <= 0 then self:_end_job(job, job.err_pending) end
  elseif job.pending == 0 and not job.open then
    self:_end_job(job)
  end
end

-- A job failed at item index. map_unordered and futures end at once; map
-- and imap end once every item before index is in (imap yields them, then
-- raises), so they raise the error of the lowest failing item, whatever the
-- order the workers finished in. Items after index are no longer sent.
function Pool:_fail_at(job, err, index)
  if job.kind ~= "imap" and job.kind ~= "map" then return self:_end_job(job, err) end
  if job.err_at and job.err_at <= index then return end
  job.err_at, job.err_pending = index, err
  local have = (job.floor or 1) - 1   -- iterator jobs: 1 .. floor-1 are all in
  for lo, n in pairs(job.got) do
    if lo < index then have = have + n end
  end
  job.missing = (index - 1) - have
  if job.missing <= 0 then self:_end_job(job, err) end
end

-- Put items lo..hi of job back in the queue.
function Pool:_requeue(job, lo, hi, tries)
  if lo > hi or job.finished then return end
  heap_push(self.queue, { prio = job.prio, seq = job.seq, job = job, lo = lo, hi = hi, tries = tries })
end

local function death_cause(exitcode, signal)
  if signal then return ("signal %d"):format(signal) end
  if exitcode ~= nil then return ("exit code %s"):format(tostring(exitcode)) end
  return "connection closed"
end

function Pool:_on_death(w, err)
  if w.dead then return end
  w.dead = true
  self:_remove(w)
  self.deaths = self.deaths + 1
  local t_death = clock()
  -- Restart intensity: at most max_restarts in restart_window seconds.
  local rs, window = self.restarts, self.restart_window
  rs[#rs + 1] = t_death
  while #rs > 0 and rs[1] < t_death - window do table.remove(rs, 1) end
  local too_many = #rs > self.max_restarts
  -- The replacement first (it starts while the rest is sorted out), and
  -- from now on the pool holds the fork server while it lives (given back
  -- in _stop_workers): with it, a replacement is a spare handed a request
  -- (about 3 ms to its first answer); without it (the only fresh worker
  -- died, and its reaping stopped the server), a fork of the host that
  -- builds its own state (8-10 ms).
  local spawned, spawn_err
  if self.state ~= "terminated" and not too_many then
    if not self.holds_server and self.method == "fresh" and self.new_resource == coproc.WorkerResource then
      self.holds_server = true
      core._hold_forkserver(true)
    end
    spawned, spawn_err = pcall(self._spawn, self)
  end
  -- Which item was running: the worker's status slot says (bid, item).
  local sbid, sitem = w.res:_status()
  pcall(w.res.join, w.res, 1)
  local exitcode, signal = w.res:exitcode()
  if type(err) == "table" and signal == nil then signal = err.signal end
  pcall(w.res.close, w.res, 0)
  local cause = death_cause(exitcode, signal)
  local last
  local inflight = w.inflight
  w.inflight = {}
  for bid, b in pairs(inflight) do
    local job = b.job
    local hi = b.lo + b.n - 1
    local first = b.lo + b.off   -- the parts before it were delivered
    if job.finished then
      goto next_batch -- its call is over: nothing to run again
    elseif bid == sbid and sitem and sitem >= 1 and sitem <= b.n then
      -- The batch that was running: item `culprit` killed the worker; the
      -- ones before it ran but their results died with it, the ones after
      -- it never ran. Only the culprit counts against retries.
      local culprit = b.lo + sitem - 1
      local e = new_error("WorkerDied", {
        message = ("%s died (%s) while running item %d"):format(w.name, cause, culprit),
        pid = w.pid, exitcode = exitcode, signal = signal, index = culprit, unanswered = b.n,
      })
      last = e
      self:_requeue(job, first, culprit - 1, b.tries)
      self:_requeue(job, culprit + 1, hi, b.tries)
      if b.tries < job.retries then
        self:_requeue(job, culprit, culprit, b.tries + 1)
      else
        self:_fail_at(job, e, culprit)
      end
    elseif bid == sbid then
      -- It died after its last item ran (sending the results) or before the
      -- first: the whole batch counts as a try.
      local e = new_error("WorkerDied", {
        message = ("%s died (%s) %s items %d..%d"):format(w.name, cause,
          (sitem or 0) >= 1 and "while sending the results of" or "before running", first, hi),
        pid = w.pid, exitcode = exitcode, signal = signal, index = first, unanswered = hi - first + 1,
      })
      last = e
      if b.tries < job.retries then self:_requeue(job, first, hi, b.tries + 1)
      else self:_fail_at(job, e, first) end
    else
      -- Never started: run it elsewhere, as it was.
      self:_requeue(job, b.lo, hi, b.tries)
    end
    ::next_batch::
  end
  last = last or new_error("WorkerDied", {
    message = ("%s died (%s) while idle"):format(w.name, cause),
    pid = w.pid, exitcode = exitcode, signal = signal })
  self.last_death = last
  if self.state == "terminated" then return end
  if too_many then
    return self:_give_up(("coproc pool: %d worker restarts within %g s (max_restarts = %d, "
      .. "restart_window = %g): giving up on the pending work; last: %s"):format(#rs, window,
      self.max_restarts, window, tostring(last.message)), last)
  end
  if not spawned then
    if #self.workers == 0 then
      return self:_give_up("coproc pool: cannot start a replacement worker: " .. tostring(spawn_err), last)
    end
  else
    self.replaced = self.replaced + 1
    self.last_replace_seconds = clock() - t_death
  end
end

-- Stop working on the pending jobs (they fail with an error saying why);
-- the next call starts again.
function Pool:_give_up(message, last)
  self.state = "broken"
  local e = new_error("WorkerDied", { message = message, pid = last.pid, exitcode = last.exitcode,
    signal = last.signal, index = last.index, cause = last })
  for job in pairs(self.jobs) do self:_end_job(job, e) end
  self.queue = { n = 0 }
end

-- Workers that reached maxtasksperchild and have nothing in flight are
-- replaced (the new one first, so it starts while the old one exits).
function Pool:_retire()
  if not self.maxtasks or self.state == "terminated" then return end
  local ws = self.workers
  for i = #ws, 1, -1 do
    local w = ws[i]
    if w.dispatched >= self.maxtasks and w.batches == 0 and not w.retiring then
      w.retiring = true
      self:_remove(w)
      self:_spawn()
      self.replaced = self.replaced + 1
      w.res:close(GRACE)   -- close request, then SIGTERM/SIGKILL; never raises
    end
  end
end

-- A reply from its msgpack bytes ({bid, seconds, nok, err, r1..r_nok}, see
-- pool_worker): the head is decoded first, then the results straight into
-- the job's results table (core.decode_into: no table per reply, no Lua
-- loop per item), and only those _on_reply would keep. A reply that does
-- not decode: with trust = "data" a refused value fails the item it was for
-- (a ProtocolError; the items before it are kept), otherwise the worker is
-- treated as broken.
local TRUST_DATA = { trust = "data" }
function Pool:_on_raw(w, raw)
  local opts = self.trust == "data" and TRUST_DATA or nil
  local bid, secs, nok, err = decode_into(raw, nil, 0, 5, nil, opts)
  if bid == nil then
    -- the head itself is bad (secs is the element, nok the message)
    local why = nok
    if not opts then
      return self:_on_death(w, new_error("ProtocolError", { message = "coproc pool: bad reply: " .. tostring(why) }))
    end
    bid = decode_into(raw, nil, 0, 2, nil, opts)
    if bid ~= nil and w.inflight[bid] then
      self:_on_reply(w, { bid, 0, 0, { kind = "decode", message = "the worker's reply was refused: " .. tostring(why) } }, true)
    end
    return
  end
  local b = w.inflight[bid]
  if not b or math.type(nok) ~= "integer" or nok < 0 or nok > b.n - b.off then
    return self:_on_reply(w, { bid, secs, nok, err })   -- ignored or checked there
  end
  local job, lo = b.job, b.lo + b.off
  local keep = nok
  if job.finished or (job.err_at and lo >= job.err_at) then keep = 0
  elseif job.err_at and lo + keep > job.err_at then keep = job.err_at - lo end
  if keep > 0 then
    local ok, bad, why = decode_into(raw, job.results, lo - 5, 5, keep, opts)
    if ok == nil then
      -- elements 5 .. bad-1 are stored; the item at bad fails
      local good = bad > 5 and bad - 5 or 0
      if good > nok then good = nok end
      return self:_on_reply(w, { bid, secs, good,
        { kind = "decode", message = "the worker's reply was refused: " .. tostring(why) } }, true)
    end
  end
  return self:_on_reply(w, { bid, secs, nok, err }, true)
end

function Pool:_drain(w)
  local m = w.m
  while true do
    local ok, has = pcall(m.available, m)
    if not ok then return self:_on_death(w, has) end
    if not has then break end
    local rok, raw = pcall(m.receive_raw, m, nil, 0)
    if not rok then return self:_on_death(w, raw) end
    self:_on_raw(w, raw)
    if w.dead then return end
  end
  if not w.dead and not m:is_connected() and m:queue_size() == 0 then self:_on_death(w, nil) end
end

--- One round: send what fits, sleep until a worker has replies or died (up
-- to timeout seconds; 0 polls), take the replies, send again.
function Pool:_pump(timeout)
  self:_dispatch()
  if #self.mlist == 0 then return end
  local ready = wait_ready(self.mlist, timeout)
  for i = 1, #ready do
    local w = self.by_m[ready[i]]
    if w and not w.dead then self:_drain(w) end
  end
  self:_retire()
  self:_dispatch()
  self:_run_callbacks()
  return #ready > 0
end

--- One round over several pools at once (futures of several pools in
-- coproc.wait / as_completed): one wait on all their workers.
function M.pump_many(pools, timeout)
  if #pools == 1 then return pools[1]:_pump(timeout) end
  local all, owner = {}, {}
  for _, p in ipairs(pools) do
    p:_dispatch()
    for _, m in ipairs(p.mlist) do
      all[#all + 1] = m
      owner[m] = p
    end
  end
  if #all == 0 then return false end
  local ready = wait_ready(all, timeout)
  for i = 1, #ready do
    local p = owner[ready[i]]
    local w = p.by_m[ready[i]]
    if w and not w.dead then p:_drain(w) end
  end
  for _, p in ipairs(pools) do
    p:_retire()
    p:_dispatch()
    p:_run_callbacks()
  end
  return #ready > 0
end

function Pool:_poll() self:_pump(0) end

---------------------------------------------------------------- driven from outside

-- The pool makes progress inside its own calls; these let a loop of the
-- host's (coproc.async, coproc.luv, coproc.cqueues, a hand-rolled poll)
-- drive it instead, so that futures complete while that loop runs
-- (docs/eventloops.md).

--- One round without waiting for anything in particular: send what fits,
-- take the replies that have come (waiting up to timeout seconds, default
-- 0), replace dead workers, run done callbacks. True when a worker had
-- something. Raises a done callback's error (CallbackError) as the other
-- pool calls do.
function Pool:pump(timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
    error(("bad argument #1 to 'pump' (non-negative number of seconds expected, got %s)"):format(options.show(timeout)), 2)
  end
  if self.state == "terminated" then return false end
  self:_reap_abandoned()
  local got = self:_pump(timeout or 0) == true
  self:_raise_callback_error()
  return got
end

--- The messengers of the current workers, to wait on for readability
-- (they change when workers are replaced: ask again after each pump).
function Pool:messengers()
  local t = {}
  for i, m in ipairs(self.mlist) do t[i] = m end
  return t
end

--- Jobs submitted and not yet finished (map calls, futures, iterators).
function Pool:unfinished()
  return self.njobs
end

-- In a coroutine whose scheduler gave it a waiter (coproc.async,
-- coproc.cqueues, ...): wait there until ready() holds or a worker of one
-- of pools has something (at most timeout seconds; nil: no limit), then
-- take what came without waiting. False when there is no such scheduler:
-- the caller then waits itself, as before.
function M._yield_round(pools, ready, timeout)
  if timeout == 0 or not coroutine.isyieldable() then return false end
  local waiter = core.waiter()
  if not waiter then return false end
  for _, p in ipairs(pools) do p:_dispatch() end
  if not ready() and not waiter { pools = pools, ready = ready, timeout = timeout } then return false end
  for _, p in ipairs(pools) do p:_pump(0) end
  return true
end

-- Notice workers that died while idle (one poll, no sleeping) so new work
-- does not go to them.
function Pool:_check_deaths()
  if #self.mlist == 0 then return end
  local ready = wait_ready(self.mlist, 0)
  for i = 1, #ready do
    local w = self.by_m[ready[i]]
    if w and not w.dead then self:_drain(w) end
  end
end

local function any_inflight(self)
  for _, w in ipairs(self.workers) do if w.batches > 0 then return true end end
  return false
end

-- Pump until done() is true. Raises coproc.Timeout after timeout seconds.
function Pool:_wait_until(done, timeout, what)
  if self.reading_items then
    error(("coproc pool: %s waited on from inside an items iterator of the same pool "
      .. "(the pool is in the middle of sending work)"):format(what), 3)
  end
  local deadline = timeout and clock() + timeout
  while not done() do
    local t
    if deadline then
      t = deadline - clock()
      if t <= 0 then
        error(new_error("Timeout", { message = ("%s timed out after %g s"):format(what, timeout) }), 3)
      end
    end
    self:_reap_abandoned()
    if self.queue.n == 0 and not any_inflight(self) and not done() then
      for job in pairs(self.jobs) do
        if job.parked then
          error(("coproc pool: %s waits for an imap/map_unordered loop over an iterator that has "
            .. "%d results it has not taken (buffersize); finish or close that loop first"):format(what,
            job.held), 3)
        end
      end
      error("coproc pool: internal error: waiting on work that is neither queued nor running", 3)
    end
    if not (isyieldable() and M._yield_round({ self }, done, t)) then self:_pump(t) end
  end
end

function Pool:_wait_job(job, timeout)
  if job.finished then return end
  self:_wait_until(function() return job.finished end, timeout, "task")
end

---------------------------------------------------------------- public calls

-- The items of a map-like call: (items, a, b, c) are what followed fn
-- (a list and options, or an iterator: see coproc/iterable.lua). Returns
-- list, n, src, opts: a list of n items (src nil), or an iterable source
-- (list nil); a list with opts.buffersize is read as an iterator too.
local function items_of(items, a, b, c, what, level, spec, lists_only)
  local form, x, opts = iterable.args(items, a, b, c, what, level + 1, spec)
  opts = options.check(opts, spec, what, level + 1)
  if form == "iter" then
    if lists_only then
      local list = iterable.collect(x)
      return list, list.n, nil, opts
    end
    return nil, nil, x, opts
  end
  local n = count_items(x, what, level + 1)
  if opts.buffersize and not lists_only then return nil, nil, iterable.list_source(x, n), opts end
  return x, n, nil, opts
end

-- Checks shared by the map-like calls; level is that of the public method.
local function map_common(self, kind, fn, items, a, b, c, star, what, level)
  check_fn(fn, what, level + 1)
  local list, n, src, opts = items_of(items, a, b, c, what, level + 1, JOB_OPTIONS)
  if opts.star ~= nil then star = opts.star end
  local job = self:_new_job(kind, fn, list, n, opts, star, what, level + 1, src)
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
-- items: a list, or an iterator (then no opts unless coproc.iter is used).
function Pool:map(fn, items, a, b, c)
  local job, opts = map_common(self, "map", fn, items, a, b, c, false, "map", 2)
  return finish_map(self, job, opts.timeout)
end

--- starmap(fn, arglists, opts): fn(table.unpack(args)) for each args.
function Pool:starmap(fn, items, a, b, c)
  local job, opts = map_common(self, "map", fn, items, a, b, c, true, "starmap", 2)
  return finish_map(self, job, opts.timeout)
end

-- The iterator's closing value: leaving the loop early drops the rest.
local function closer(self, job)
  return setmetatable({}, { __close = function()
    if not job.finished then self:_end_job(job, new_error("Cancelled",
      { message = "iteration stopped" })) end
  end })
end

-- A value only the step function of an imap / map_unordered holds: when the
-- step function is collected without its loop being closed (an iterator
-- called by hand, then dropped), the job is dropped at the pool's next
-- call (not from the finalizer, which may run in the middle of one).
local function sentinel(self, job)
  return setmetatable({}, { __gc = function()
    if not job.finished then
      local a = self.abandoned
      a[#a + 1] = job
    end
  end })
end

-- End the jobs whose loops were dropped (see sentinel).
function Pool:_reap_abandoned()
  local a = self.abandoned
  if a[1] == nil then return end
  self.abandoned = {}
  for _, job in ipairs(a) do
    if not job.finished then
      self:_end_job(job, new_error("Cancelled", { message = "iteration abandoned" }))
    end
  end
end

-- The step function of imap over job: (index, result) in item order.
-- Hand out result i of job; an iterator job's buffer forgets it (bounded memory).
local function take_result(self, job, results, src, i)
  local v = results[i]
  if src then
    results[i] = nil
    self:_release(job, 1, true)
  end
  return v
end

local function imap_steps(self, job, timeout)
  local nexti, upto = 1, 0
  local ranges, results = job.ranges, job.results
  local src = job.src
  local keep = sentinel(self, job)
  local function have()
    return nexti <= upto or ranges[nexti] ~= nil or job.finished
  end
  return function()
    local _ = keep
    if nexti > upto then
      self:_raise_callback_error()
      local k = ranges[nexti]
      if k == nil then
        if not job.finished then self:_wait_until(have, timeout, "imap") end
        k = ranges[nexti]
        if k == nil then
          if job.err then error(job.err, 0) end
          return nil   -- every item yielded
        end
      end
      ranges[nexti] = nil
      upto = nexti + k - 1
    end
    local i = nexti
    nexti = i + 1
    return i, take_result(self, job, results, src, i)
  end
end

-- The step function of map_unordered over job: (index, result) as they come.
local function unordered_steps(self, job, timeout)
  local k, pos, left = 0, 0, 0   -- range k of job.done_*, item pos, left in it
  local results, src = job.results, job.src
  local keep = sentinel(self, job)
  local function have() return job.ndone > k or job.finished end
  return function()
    local _ = keep
    if left == 0 then
      self:_raise_callback_error()
      if job.ndone <= k then
        if job.err then error(job.err, 0) end
        if job.finished then return nil end
        self:_wait_until(have, timeout, "map_unordered")
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
    return i, take_result(self, job, results, src, i)
  end
end

--- imap(fn, items, opts): ordered lazy iterator: `for i, result in pool:imap(f, xs)`.
-- An iterator as items is read as batches go out, at most buffersize ahead.
function Pool:imap(fn, items, a, b, c)
  local job, opts = map_common(self, "imap", fn, items, a, b, c, false, "imap", 2)
  return imap_steps(self, job, opts.timeout), nil, nil, closer(self, job)
end

--- map_unordered(fn, items, opts): iterator yielding (index, result) as
-- results come in (imap_unordered alias).
function Pool:map_unordered(fn, items, a, b, c)
  local job, opts = map_common(self, "unordered", fn, items, a, b, c, false, "map_unordered", 2)
  return unordered_steps(self, job, opts.timeout), nil, nil, closer(self, job)
end
Pool.imap_unordered = Pool.map_unordered

local SUBMIT_OPTIONS = { priority = "number", retries = "nonnegint" }

local function submit(self, fn, args, opts, what, level)
  check_fn(fn, what, level + 1)
  if args == nil then args = {} end
  if type(args) ~= "table" then
    error(("bad argument #2 to '%s' (table of arguments expected, got %s)"):format(what, type(args)), level + 1)
  end
  opts = options.check(opts, SUBMIT_OPTIONS, what, level + 1)
  local job = self:_new_job("future", fn, { args }, 1, opts, true, what, level + 1)
  local f = Future.new(self, job)
  job.future = f
  return f
end

--- submit(fn, args, opts) -> Future. args: a list (nil holes need args.n).
function Pool:submit(fn, args, opts)
  local f = submit(self, fn, args, opts, "submit", 2)
  return f   -- not a tail call: argument errors name the caller's line
end

--- apply(fn, ...) -> fn(...) run in a worker.
function Pool:apply(fn, ...)
  return submit(self, fn, table.pack(...), nil, "apply", 2):result()
end

local ASYNC_OPTIONS = { priority = "number", retries = "nonnegint", callback = "callable",
  error_callback = "callable" }

--- apply_async(fn, args, {callback, error_callback, priority, retries})
-- -> Future (multiprocessing's AsyncResult: get, wait, ready, successful
-- too). callback(result) or error_callback(err) runs in the host when the
-- task ends, as a done callback.
function Pool:apply_async(fn, args, opts)
  opts = options.check(opts, ASYNC_OPTIONS, "apply_async", 2)
  local cb, ecb = opts.callback, opts.error_callback
  opts.callback, opts.error_callback = nil, nil
  local f = submit(self, fn, args, opts, "apply_async", 2)
  if cb or ecb then
    f:add_done_callback(function(fut)
      local job = fut._job
      if job.err ~= nil then
        if ecb then ecb(job.err) end
      elseif cb then
        cb(job.results[1])
      end
    end)
  end
  return f
end

--- Wait for futures (from this pool): returns the list of those done, after
-- at least one is (or timeout; nil = forever; 0 polls).
function Pool:wait_any(futures, timeout)
  self:_raise_callback_error()
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
  if self.state == "running" or self.state == "broken" then self.state = "closed" end
end

--- Wait for every submitted job (up to timeout), then stop the workers.
-- Needs close() first, like multiprocessing. Raises a CallbackError left
-- by a done callback (after stopping the workers, if one failed meanwhile).
function Pool:join(timeout)
  if self.state == "running" then
    error("coproc pool: join() needs close() first", 2)
  end
  self:_raise_callback_error()
  if self.njobs > 0 then
    self:_wait_until(function() return self.njobs == 0 end, timeout, "join")
  end
  self:_stop_workers(GRACE)
  self:_raise_callback_error()
end

-- Every worker gets a close request; those that do not exit within grace
-- seconds (busy, stopped, not reading) get SIGTERM, then SIGKILL.
function Pool:_stop_workers(grace)
  local ws = self.workers
  self.workers, self.mlist, self.by_m = {}, {}, {}
  self.state = "terminated"
  local rs = {}
  for i, w in ipairs(ws) do rs[i] = w.res end
  self.stop_all(rs, grace)
  if self.holds_server and self.owner == coproc.getpid() then
    self.holds_server = false
    core._hold_forkserver(false)
  end
end

--- Stop now: unfinished jobs end with coproc.Cancelled (their done
-- callbacks run, except from __gc), workers are closed (SIGTERM then
-- SIGKILL for busy ones) within about half a second. Never raises. Also
-- __close/__gc.
function Pool:terminate(from_gc)
  if self.state == "terminated" then return end
  -- A copy of the pool in a forked child ("inherit" workers) owns nothing.
  if self.owner ~= coproc.getpid() then return end
  for job in pairs(self.jobs) do
    self:_end_job(job, new_error("Cancelled", { message = "pool terminated" }))
  end
  self:_stop_workers(0.05)
  if from_gc ~= true then self:_run_callbacks() end
end

Pool.__close = function(self) pcall(Pool.terminate, self) end
Pool.__gc = function(self) pcall(Pool.terminate, self, true) end

function Pool:__tostring()
  return ("coproc.Pool(%d workers, %s)"):format(self.size, self.state)
end

---------------------------------------------------------------- LazyPool

local LazyPool = {}
LazyPool.__index = LazyPool
LazyPool.__name = "coproc.LazyPool"

local LAZY_OPTIONS = {
  n = "posint", chunksize = "posint", retries = "nonnegint", timeout = "nonneg", progress = "boolean",
  trust = { "code", "data" },
  progress_stream = "any", budget = "nonneg", priority = "number", prefetch = "posint",
  max_restarts = "nonnegint", restart_window = "nonneg", star = "boolean",
}

--- LazyPool(n, opts): forks n workers for each map, with the "inherit" start
-- method: fn and items are inherited by the fork, never encoded or sent, so
-- any closure and any item (userdata too) works; only indices go out and
-- results come back.
function M.LazyPool(n, opts)
  if type(n) == "table" and opts == nil then opts, n = n, n.n end
  opts = options.check(opts, LAZY_OPTIONS, "LazyPool", 2)
  opts.n = nil
  if n == nil then n = coproc.cpu_count() end
  local ni = options.integer(n)
  if not ni or ni < 1 then
    error(("bad argument #1 to 'LazyPool' (positive integer expected, got %s)"):format(options.show(n)), 2)
  end
  return setmetatable({ size = ni, opts = opts }, LazyPool)
end

-- A Pool of size workers ("inherit") for one call: fn and items are the
-- fork's own, never sent. Returns the engine, the job options and all opts.
local function lazy_engine(self, fn, items, star, opts, size)
  local lazy = { fn = fn, items = items, star = star }
  local o = {}
  for k, v in pairs(self.opts) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  local job_opts = { chunksize = o.chunksize, retries = o.retries, progress = o.progress,
    progress_stream = o.progress_stream, priority = o.priority }
  local pool_opts = {}
  for k, v in pairs(o) do
    if k ~= "timeout" and k ~= "star" and k ~= "progress_stream" then pool_opts[k] = v end
  end
  pool_opts.method = "inherit"
  pool_opts._target = function(m, kw) return require("coproc.pool_worker").run(m, kw, lazy) end
  local engine = M.Pool(size or self.size, pool_opts)
  job_opts._lazy_fid = { id = 0, lazy = true, shared = "none" }
  return engine, job_opts, o
end

-- fn and the items of a LazyPool call (an iterator is read to the end
-- first: the workers can only inherit items that exist when they fork).
local function lazy_args(fn, items, a, b, c, what, level)
  check_fn(fn, what, level + 1)
  return items_of(items, a, b, c, what, level + 1, LAZY_OPTIONS, true)
end

local function lazy_run(self, kind, fn, list, n, opts, star, what, size)
  local engine, jo, o = lazy_engine(self, fn, list, star, opts, size)
  local ok, res = pcall(function()
    local job = engine:_new_job(kind, nil, list, n, jo, star, what, 1)
    return finish_map(engine, job, o.timeout)
  end)
  engine:terminate()
  if not ok then error(res, 0) end
  return res
end

--- map(fn, items, opts) -> results, like Pool:map.
function LazyPool:map(fn, items, a, b, c)
  local list, n, _, opts = lazy_args(fn, items, a, b, c, "map", 2)
  local r = lazy_run(self, "map", fn, list, n, opts, opts.star or false, "map")
  return r   -- not a tail call: argument errors name the caller's line
end
function LazyPool:starmap(fn, items, a, b, c)
  local list, n, _, opts = lazy_args(fn, items, a, b, c, "starmap", 2)
  local r = lazy_run(self, "map", fn, list, n, opts, true, "starmap")
  return r
end

--- apply(fn, ...) -> fn(...) in one forked worker (which inherits fn and
-- the arguments).
function LazyPool:apply(fn, ...)
  check_fn(fn, "apply", 2)
  local r = lazy_run(self, "map", fn, { table.pack(...) }, 1, {}, true, "apply", 1)
  return r[1]
end

-- The iterator of a LazyPool call: the engine's workers end with the loop
-- (its end, an error, a break: the closing value), or when the iterator is
-- collected. Neither raises.
local function lazy_iter(self, kind, fn, items, a, b, c, what)
  local list, n, _, opts = lazy_args(fn, items, a, b, c, what, 3)
  local star = opts.star or false
  local engine, jo, o = lazy_engine(self, fn, list, star, opts)
  local ok, job = pcall(engine._new_job, engine, kind, nil, list, n, jo, star, what, 1)
  if not ok then engine:terminate(); error(job, 0) end
  local step = (kind == "imap" and imap_steps or unordered_steps)(engine, job, o.timeout)
  local function stop() pcall(engine.terminate, engine) end
  local function iter()
    local sok, i, r = pcall(step)
    if not sok then stop(); error(i, 0) end
    if i == nil then stop() end
    return i, r
  end
  return iter, nil, nil, setmetatable({}, { __close = stop, __gc = stop })
end

--- imap(fn, items, opts): ordered iterator of (index, result), like Pool:imap.
function LazyPool:imap(fn, items, a, b, c)
  local f, s, ctl, cl = lazy_iter(self, "imap", fn, items, a, b, c, "imap")
  return f, s, ctl, cl   -- not a tail call: argument errors name the caller's line
end

--- map_unordered(fn, items, opts): iterator of (index, result) as they come.
function LazyPool:map_unordered(fn, items, a, b, c)
  local f, s, ctl, cl = lazy_iter(self, "unordered", fn, items, a, b, c, "map_unordered")
  return f, s, ctl, cl
end
LazyPool.imap_unordered = LazyPool.map_unordered

function LazyPool:__tostring() return ("coproc.LazyPool(%d workers)"):format(self.size) end

---------------------------------------------------------------- exports

M.WorkerResourcePool = function(...)
  return require("coproc.wrpool").WorkerResourcePool(...)
end

return setmetatable(M, { __call = function(_, ...) return M.Pool(...) end })
