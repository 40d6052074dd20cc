--- coproc.mpi: coproc's Pool and WorkerResource over the ranks of an MPI job
-- (Open MPI), for work that outgrows one machine. docs/mpi.md is the
-- contract.
--
--   mpirun -n 4 coproc-lua -m coproc.mpi script.lua args...
--   srun -n 64 coproc-lua -m coproc.mpi script.lua args...
--
-- Rank 0 runs the script; ranks 1..n-1 serve (coproc/mpi_serve.lua). In the
-- script, coproc.mpi.Pool() is a coproc.Pool whose workers are ranks (the
-- pool code is the same, pool.lua and pool_worker.lua), and
-- coproc.mpi.WorkerResource(Class):start{...} binds a stateful worker to a
-- free rank. A rank is reached through a messenger over MPI (the
-- coproc.mpi_core module, the only part of coproc that links MPI); this
-- module loads it only in main(), so `require "coproc"` never maps MPI.
--
-- What differs from one machine (there is no page shared with a rank):
-- batches go with ticket 0, so no work stealing and a task sent to a rank
-- cannot be cancelled; a rank that calls os.exit tells rank 0 which item it
-- was running before it goes (mpi_core.send_notice), a killed rank cannot,
-- and either way Open MPI ends the whole job: rank 0 then says which items
-- each rank was running (sigterm_report) and exits non-zero.
local coproc = require "coproc"
local errors = require "coproc.errors"
local options = require "coproc.options"
local core = coproc.core

local M = {}

local mpi      -- coproc.mpi_core, loaded by main()
local host     -- rank 0's bookkeeping, once main() has started the job
local finished -- MPI is finalized (or aborting): resources only close their messengers

local CTL_TAG = 2            -- links use even tags (tag + 1 carries their credit)
local HELLO_TIMEOUT = 120  -- seconds for every serving rank to report
local STOP_GRACE = 5       -- seconds the serving ranks get to stop at the end
local CLOSE_TIMEOUT = 1.0  -- seconds a worker gets to answer a close request
local STATUS_WAIT = 1.0    -- seconds to wait for a rank's word on a worker that ended

local live = setmetatable({}, { __mode = "k" })   -- started resources
local pools = setmetatable({}, { __mode = "k" })  -- MPI pools (sigterm_report)

local function need_host(what, level)
  if not host then
    error(("coproc.mpi.%s: not in an MPI job's rank 0; start the script with "
      .. "`mpirun -n N coproc-lua -m coproc.mpi script.lua`"):format(what), level + 1)
  end
  return host
end

---------------------------------------------------------------- ranks

-- Take in what a rank's control link brought: "ended" and "started".
local function pump_ctl(r)
  if r.state == "dead" then return end
  local ok, msgs = pcall(r.ctl.receive_available, r.ctl)
  if not ok then
    r.state, r.why = "dead", tostring(msgs)
    return
  end
  for _, msg in ipairs(msgs) do
    local op, tag = msg[1], msg[2]
    local res = r.by_tag[tag]
    if op == "started" and res then
      res._local_pid = msg[3]
    elseif op == "ended" then
      r.by_tag[tag] = nil
      if res then
        res._ended = { code = msg[3] or nil, signal = msg[4] or nil, bid = msg[5] or 0, item = msg[6] or 0 }
      end
      if r.slots then
        r.slots_used = r.slots_used - 1
        if r.slots_used == 0 and r.released then r.slots, r.state, r.released = nil, "free", nil end
      elseif r.state == "busy" or r.state == "lost" then
        r.state = "free"
      end
    end
  end
end

-- A rank that called os.exit told us before it went (mpi_core.notice).
local function rank_notice(r)
  local n = mpi.notice(r.rank)
  if n and r.state ~= "dead" then
    r.state, r.why = "dead", ("called os.exit(%d)"):format(n.code)
  end
  return n
end

local function pump_all(h)
  for _, r in ipairs(h.ranks) do pump_ctl(r) end
end

local function describe_rank(r)
  return ("rank %d (pid %d on %s)"):format(r.rank, r.pid, r.node)
end

local function new_tag(h)
  local t = h.next_tag
  if t + 1 > h.tag_ub then error("coproc.mpi: out of MPI tags (two per worker start)", 3) end
  h.next_tag = t + 2
  return t
end

local function take_free_rank(h, level)
  pump_all(h)
  for _, r in ipairs(h.ranks) do
    if r.state == "free" then
      r.state = "busy"
      return r
    end
  end
  local busy = {}
  for _, r in ipairs(h.ranks) do busy[#busy + 1] = ("%d %s"):format(r.rank, r.state) end
  error(("coproc.mpi: no free rank (%d serving: %s); start the job with more ranks")
    :format(#h.ranks, #busy > 0 and table.concat(busy, ", ") or "none"), level + 1)
end

-- Wait (running the loop, so everything else goes on) until done() is
-- true or timeout seconds pass (nil: no limit). Returns done().
local function wait_until(r, done, timeout)
  local deadline = timeout and core.now() + timeout
  while true do
    pump_ctl(r)
    rank_notice(r)
    if done() then return true end
    if r.state == "dead" then return done() end
    local left = deadline and deadline - core.now()
    if left and left <= 0 then return done() end
    -- A notice wakes no messenger: look again every 50 ms.
    coproc.wait({ r.ctl }, left and math.min(left, 0.05) or 0.05)
  end
end

---------------------------------------------------------------- WorkerResource

local Res = {}
Res.__index = Res
Res.__name = "coproc.mpi.WorkerResource"

local RES_OPTIONS = {
  method = { "fresh" }, messenger_type = "any", trust = { "code", "data" },
  _status = "any", _pick = "any", _pool = "any",
}

--- WorkerResource(target, opts): like coproc.WorkerResource, on a free rank
-- (method "fresh" only: a rank cannot inherit rank 0's state).
function M.WorkerResource(target, opts)
  local tt = type(target)
  if tt ~= "table" and tt ~= "function" then
    error("bad argument #1 to 'WorkerResource' (worker class or function expected, got " .. tt .. ")", 2)
  end
  opts = options.check(opts, RES_OPTIONS, "WorkerResource", 2)
  local mtype = opts.messenger_type
  if mtype ~= nil and mtype ~= coproc.PriorityMessenger and mtype ~= coproc.MultiMessenger then
    error("bad option 'messenger_type' to 'WorkerResource' (coproc.PriorityMessenger or coproc.MultiMessenger expected)", 2)
  end
  return setmetatable({ target = target, arrival_order = mtype == coproc.MultiMessenger,
    trust = opts.trust or "code", _pick = opts._pick, _pool = opts._pool }, Res)
end

local function running(self)
  local r = rawget(self, "_rank")
  if not r or rawget(self, "_ended") then return false end
  pump_ctl(r)
  rank_notice(r)
  return not rawget(self, "_ended") and r.state ~= "dead"
end

--- Start the worker on a free rank (kwargs become fields of the instance).
-- Returns self. Raises EncodeError (target or kwargs cannot be sent) before
-- any rank is taken, and an error naming the ranks when none is free.
function Res:start(kwargs)
  local h = need_host("WorkerResource", 2)
  if running(self) then
    errors.raise(errors.WorkerIsAlreadyAliveError, describe_rank(self._rank) .. " runs this worker already")
  end
  if kwargs ~= nil and type(kwargs) ~= "table" then
    error("bad argument #1 to 'start' (table of keyword arguments expected)", 2)
  end
  local payload = core.encode({ self.target, kwargs or {} })
  if self.messenger then self.messenger:close() end
  local pick = rawget(self, "_pick")
  local r = pick and pick(2) or take_free_rank(h, 2)
  local tag = new_tag(h)
  local m = mpi.link(r.rank, tag, true, self.arrival_order)
  m:set_trust(self.trust)   -- what this host accepts from the rank
  r.ctl:send_norequest({ pick and "slot" or "start", tag, payload, self.arrival_order })
  r.by_tag[tag] = self
  self.messenger, self._rank, self._tag, self._ended, self._local_pid = m, r, tag, nil, nil
  self._kwargs, self._owner = kwargs or {}, core.getpid()
  live[self] = true
  if pick then
    -- The rank forks a local worker: wait for its pid (names and pid()).
    wait_until(r, function() return rawget(self, "_local_pid") ~= nil or rawget(self, "_ended") ~= nil end, 10)
  end
  return self
end

--- The rank this worker runs on (nil before start).
function Res:rank()
  local r = rawget(self, "_rank")
  return r and r.rank
end

--- Where it runs: "rank 2 (pid 4242 on node7)" (a hybrid pool's local
-- worker: "rank 2, local worker 4243 (node7)").
function Res:describe()
  local r = rawget(self, "_rank")
  if not r then return "coproc.mpi worker (not started)" end
  if rawget(self, "_pick") then
    local lp = rawget(self, "_local_pid")
    return ("rank %d, %s (%s)"):format(r.rank, lp and ("local worker " .. lp) or "local worker", r.node)
  end
  return describe_rank(r)
end

--- The pid of the process running the worker: the rank's (a hybrid slot's
-- local worker once the rank has said which). Pids are per node.
function Res:pid()
  local r = rawget(self, "_rank")
  return rawget(self, "_local_pid") or (r and r.pid)
end

function Res:is_alive() return running(self) end
function Res:process_exists() return rawget(self, "_rank") ~= nil end

--- Wait for the worker to end on its own; true when it has.
function Res:join(timeout)
  local r = rawget(self, "_rank")
  if not r then errors.raise(errors.WorkerIsDeadError, "worker was never started") end
  return wait_until(r, function()
    return rawget(self, "_ended") ~= nil or r.state == "dead"
  end, timeout)
end

--- Exit code once ended (nil, signal for a hybrid slot's local worker
-- killed by a signal; nil while running).
function Res:exitcode()
  local e = rawget(self, "_ended")
  if e then return e.code, e.signal end
  local r = rawget(self, "_rank")
  local n = r and not rawget(self, "_pick") and mpi.notice(r.rank)
  if n then return n.code end
end

-- (bid, item) of the pool batch this worker was running when it ended, as
-- its rank reported (for the pool's culprit), after waiting a moment for
-- that report.
function Res:_status()
  local r = rawget(self, "_rank")
  if not r then return end
  wait_until(r, function()
    return rawget(self, "_ended") ~= nil or (not rawget(self, "_pick") and mpi.notice(r.rank) ~= nil)
  end, STATUS_WAIT)
  local e = rawget(self, "_ended")
  if e and e.bid ~= 0 then return e.bid, e.item end
  local n = not rawget(self, "_pick") and mpi.notice(r.rank)
  if n and n.bid ~= 0 then return n.bid, n.item end
end

-- Close request, wait; a worker that does not end within timeout leaves
-- its rank "lost" (no signal reaches another node): the rank gets no more
-- work, and the end of the job aborts it if it has not finished by then.
local function shutdown(self, timeout)
  local r, m = rawget(self, "_rank"), rawget(self, "messenger")
  if not r or rawget(self, "_owner") ~= core.getpid() then return end
  if finished or mpi.terminated() then
    -- (after SIGTERM it stays listed: the report says what it ran)
    if m then m:close() end
    return
  end
  timeout = timeout or CLOSE_TIMEOUT
  if running(self) and m and m:is_connected() then
    pcall(m.send_close_request, m)
    pcall(m.flush, m, timeout)
    if not self:join(timeout) and r.state ~= "dead" and not rawget(self, "_pick") then r.state = "lost" end
  end
  if m then m:close() end
  live[self] = nil
end

--- Close request, then wait timeout seconds (default 1). Raises
-- WorkerIsAlreadyDeadError if it is not running.
function Res:terminate(timeout)
  if not running(self) then
    local m = rawget(self, "messenger")
    if m then m:close() end
    errors.raise(errors.WorkerIsAlreadyDeadError, rawget(self, "_rank") and (self:describe() .. " is not running")
      or "worker was never started")
  end
  shutdown(self, timeout)
end

--- Terminate if running; never raises.
function Res:close(timeout) pcall(shutdown, self, timeout) end

--- Stop it if it runs, start it again with kwargs (nil: the last ones).
function Res:reset_process(kwargs, timeout)
  if kwargs == nil then kwargs = rawget(self, "_kwargs") end
  pcall(shutdown, self, timeout)
  return self:start(kwargs)
end

Res.__close = function(self) pcall(shutdown, self) end
Res.__gc = function(self) pcall(shutdown, self) end

function Res:__tostring()
  local state = not rawget(self, "_rank") and "not started" or (running(self) and "running" or "ended")
  return ("coproc.mpi.WorkerResource(%s%s)"):format(state, rawget(self, "_rank") and (", " .. self:describe()) or "")
end

-- Stop many at once within about grace seconds (a pool's workers): close
-- requests to all, one shared wait.
local function stop_all(resources, grace)
  -- No signal reaches a rank: a close request is all there is, so it gets
  -- at least CLOSE_TIMEOUT whatever the pool asks (terminate asks 0.05 s).
  grace = math.max(grace or 0, CLOSE_TIMEOUT)
  local deadline = core.now() + grace
  local waiting = {}
  for _, res in ipairs(resources) do
    local m = rawget(res, "messenger")
    if running(res) and m and m:is_connected() then
      pcall(m.send_close_request, m)
      waiting[#waiting + 1] = res
    end
  end
  for _, res in ipairs(waiting) do
    local left = deadline - core.now()
    if left > 0 then pcall(res.messenger.flush, res.messenger, left) end
  end
  for _, res in ipairs(waiting) do
    local left = deadline - core.now()
    pcall(res.join, res, left > 0 and left or 0)
  end
  for _, res in ipairs(resources) do pcall(shutdown, res, 0) end
end

---------------------------------------------------------------- Pool

local pool_mod  -- coproc.pool, on first use

--- Pool(n, opts) / Pool{n =, per_rank =, ...}: a coproc.Pool on n free
-- ranks (default: all free ones). per_rank = k: each of those ranks runs k
-- local worker processes (relayed by the rank), n * k workers in all.
-- Every option of coproc.Pool but method = "inherit" and functions.
function M.Pool(n, opts)
  if type(n) == "table" and opts == nil then opts, n = n, n.n or n.processes end
  pool_mod = pool_mod or require "coproc.pool"
  local spec = {}
  for k, v in pairs(pool_mod._POOL_OPTIONS) do spec[k] = v end
  spec.per_rank = "posint"
  opts = options.check(opts, spec, "Pool", 2)
  if opts.method == "inherit" or opts.functions then
    error("bad option 'method' to 'Pool' (ranks start \"fresh\": an MPI rank cannot inherit rank 0's state)", 2)
  end
  if opts.maxtasksperchild then
    -- A retiring worker's replacement is started before the old one ends:
    -- on ranks there is no spare one to start it on.
    error("bad option 'maxtasksperchild' to 'Pool' (not over MPI: a rank's worker lives as long as the pool)", 2)
  end
  local h = need_host("Pool", 2)
  pump_all(h)
  local free = {}
  for _, r in ipairs(h.ranks) do if r.state == "free" then free[#free + 1] = r end end
  local nr = n
  if nr == nil then nr = #free end
  local ni = options.integer(nr)
  if not ni or ni < 1 then
    if n == nil then
      error(("coproc.mpi.Pool: no free rank (%d serving ranks); start the job with more ranks"):format(#h.ranks), 2)
    end
    error(("bad argument #1 to 'Pool' (positive integer expected, got %s)"):format(options.show(n)), 2)
  end
  if ni > #free then
    error(("coproc.mpi.Pool: %d ranks asked for, %d free (of %d serving ranks)"):format(ni, #free, #h.ranks), 2)
  end
  local per_rank = opts.per_rank
  opts.per_rank, opts.n, opts.processes = nil, nil, nil
  local size, mine = ni, {}
  if per_rank then
    for i = 1, ni do
      local r = free[i]
      r.state, r.slots, r.slots_used, r.released = "relay", per_rank, 0, nil
      mine[i] = r
    end
    size = ni * per_rank
    local function pick(level)
      pump_all(h)
      for _, r in ipairs(mine) do
        if r.slots and r.slots_used < r.slots and r.state == "relay" then
          r.slots_used = r.slots_used + 1
          return r
        end
      end
      error("coproc.mpi: no free local worker slot on the pool's ranks", level + 1)
    end
    opts._resource = function(target) return M.WorkerResource(target, { _pick = pick, _pool = true }) end
  else
    opts._resource = function(target) return M.WorkerResource(target, { _pool = true }) end
  end
  opts._stop_all = function(rs, grace)
    stop_all(rs, grace)
    for _, r in ipairs(mine) do
      r.released = true
      pump_ctl(r)
      if r.slots and r.slots_used == 0 then r.slots, r.state, r.released = nil, "free", nil end
    end
  end
  opts.method = "fresh"
  local p = pool_mod.Pool(size, opts)
  p.mpi_ranks, p.per_rank = ni, per_rank
  pools[p] = true
  -- The launcher's SIGTERM ends the pool's wait: say at once what each
  -- rank was running, before the error unwinds (and closes) the pool.
  -- A rank that ended (os.exit) ends the job within a second or so: say at
  -- once which item it was running, before the launcher's SIGTERM.
  local base_death = p._on_death
  p._on_death = function(self, w, err)
    base_death(self, w, err)
    local r = w.res and rawget(w.res, "_rank")
    if r and not rawget(w.res, "_pick") and mpi.notice(r.rank) and self.last_death then
      io.stderr:write("coproc.mpi: ", tostring(self.last_death.message), "; with MPI this ends the whole job\n")
      io.stderr:flush()
    end
  end
  local base_pump = p._pump
  p._pump = function(self, timeout)
    local ok, v = pcall(base_pump, self, timeout)
    if ok then return v end
    if mpi.terminated() then M._report_terminated() end
    error(v, 0)
  end
  return p
end

---------------------------------------------------------------- information

--- The serving ranks: {rank, pid, node, state} each (state "free", "busy",
-- "relay" (a hybrid pool's), "lost" (a worker that did not stop), "dead").
function M.ranks()
  local h = need_host("ranks", 2)
  pump_all(h)
  local t = {}
  for i, r in ipairs(h.ranks) do
    rank_notice(r)
    t[i] = { rank = r.rank, pid = r.pid, node = r.node, state = r.state }
  end
  return t
end

--- This rank (0 in the script) and the job's size, or nil outside a job.
function M.rank() return host and 0 end
function M.size() return host and host.size end

---------------------------------------------------------------- the end of a job

-- What rank 0 says when the launcher ends the job: which ranks ran which
-- items; a rank of this node that is gone is the one that died.
local function sigterm_report(out)
  local h = host
  -- (its first line, that the job is ending, was written by the handler)
  local busy = {}
  for p in pairs(pools) do
    for _, w in ipairs(p.workers or {}) do
      local r = w.res and rawget(w.res, "_rank")
      for _, b in pairs(w.inflight or {}) do
        if r and b.n > 0 then
          local t = busy[r] or {}
          busy[r] = t
          local what = b.job.kind == "future" and "a submitted task" or ("a " .. b.job.kind)
          t[#t + 1] = (b.n == 1 and "item %d of %s" or "items %d..%d of %s"):format(b.lo,
            b.n == 1 and what or b.lo + b.n - 1, what)
        end
      end
    end
  end
  for res in pairs(live) do
    local r = rawget(res, "_rank")
    if r and not rawget(res, "_ended") and not busy[r] and not rawget(res, "_pool") then
      busy[r] = { "a WorkerResource" }
    end
  end
  local me = mpi.processor_name()
  for _, r in ipairs(h.ranks) do
    local gone = r.node == me and not mpi.pid_alive(r.pid)
    local n = mpi.notice(r.rank)
    local state = n and (", called os.exit(%d)"):format(n.code) or (gone and ", gone" or "")
    local doing = busy[r] and ("running " .. table.concat(busy[r], ", ")) or "idle"
    if busy[r] or gone or n then
      out:write(("coproc.mpi:   %s%s: %s\n"):format(describe_rank(r), state, doing))
    end
  end
  out:flush()
end
local reported = false
--- (internal) Print the SIGTERM report once, to stderr.
function M._report_terminated()
  if reported or not host then return end
  reported = true
  sigterm_report(io.stderr)
end

-- Stop every worker and serving rank: MPI_Finalize when all stop within
-- STOP_GRACE seconds, else (or when a rank died) MPI_Abort, which ends the
-- job with a non-zero status either way.
local function finish(status)
  local h = host
  if not h or finished then return end
  local ok_all = not mpi.terminated()
  if ok_all then
    for p in pairs(pools) do pcall(p.terminate, p) end
    for res in pairs(live) do pcall(shutdown, res, CLOSE_TIMEOUT) end
  end
  finished = true
  local bad = {}
  for _, r in ipairs(h.ranks) do
    pump_ctl(r)
    rank_notice(r)
    if r.state == "dead" or r.state == "lost" or r.state == "busy" then
      bad[#bad + 1] = ("%s: %s"):format(describe_rank(r), r.why or r.state)
    elseif ok_all then
      pcall(r.ctl.send_norequest, r.ctl, { "exit" })
    end
  end
  for _, r in ipairs(h.ranks) do
    if r.state ~= "dead" then pcall(r.ctl.flush, r.ctl, 1) end
    r.ctl:close()
  end
  if ok_all and #bad == 0 and mpi.quiesce(STOP_GRACE) then
    mpi.finalize()
    return
  end
  if #bad > 0 and ok_all then
    io.stderr:write("coproc.mpi: ending the job with MPI_Abort; ranks that did not stop: "
      .. table.concat(bad, "; ") .. "\n")
  end
  mpi.abort(status ~= 0 and status or 1)
end

-- Start rank 0's side: a control link to every serving rank, and its hello.
local function start_host(size)
  local h = { size = size, ranks = {}, next_tag = CTL_TAG + 2, tag_ub = mpi.tag_ub() }
  for r = 1, size - 1 do
    h.ranks[r] = { rank = r, ctl = mpi.link(r, CTL_TAG, true, false), state = "starting", by_tag = {},
      pid = 0, node = "?" }
  end
  local deadline = core.now() + HELLO_TIMEOUT
  for _, r in ipairs(h.ranks) do
    local ok, msg = pcall(r.ctl.receive_blocking, r.ctl, nil, math.max(0, deadline - core.now()))
    if not ok or type(msg) ~= "table" or msg[1] ~= "hello" then
      io.stderr:write(("coproc.mpi: rank %d did not report within %d s: %s\n"):format(r.rank, HELLO_TIMEOUT,
        tostring(ok and msg or msg)))
      mpi.abort(1)
    end
    r.pid, r.node, r.state = msg[3], msg[4], "free"
  end
  return h
end

local function exit_status(code)
  if code == nil or code == true then return 0 end
  if code == false then return 1 end
  return math.tointeger(code) or 1
end

local function report(err)
  if mpi.terminated() then
    M._report_terminated()
    -- The script's error is the interruption itself: say what it was.
    if tostring(err):find("^Interrupted") then
      io.stderr:write("coproc.mpi: rank 0 stops: the launcher ends the job\n")
      io.stderr:flush()
      return
    end
  end
  io.stderr:write("coproc-lua: ", tostring(err), "\n")
  io.stderr:flush()
end

--- Entry point of `coproc-lua -m coproc.mpi script.lua args...` on every
-- rank: rank 0 runs the script (arg and ... as for `coproc-lua script.lua
-- args...`), the others serve. Returns the exit status.
function M.main(args)
  mpi = require "coproc.mpi_core"
  local rank, size = mpi.init()
  if rank ~= 0 then
    local ok, code = xpcall(require("coproc.mpi_serve").serve, mpi.msghandler, rank)
    if not ok then
      io.stderr:write(("coproc.mpi: rank %d: %s\n"):format(rank, tostring(code)))
      mpi.abort(1)
    end
    mpi.quiesce(STOP_GRACE)
    mpi.finalize()
    return code
  end
  mpi.catch_sigterm()
  host = start_host(size)
  local script = args[1]
  if not script then
    io.stderr:write("usage: coproc-lua -m coproc.mpi script.lua [args...]\n")
    finish(2)
    return 2
  end
  -- arg as the script would see it run directly: arg[0] the script.
  local old, new = _G.arg or {}, {}
  for i, v in pairs(old) do if math.type(i) == "integer" then new[i - 1] = v end end
  _G.arg = new
  local real_exit = os.exit
  os.exit = function(code, close)   -- luacheck: ignore 122
    finish(exit_status(code))
    return real_exit(code, close)
  end
  local status = 0
  local chunk, lerr = loadfile(script)
  if not chunk then
    report(lerr)
    status = 1
  else
    local ok, err = xpcall(chunk, mpi.msghandler, table.unpack(args, 2))
    if not ok then
      report(err)
      status = 1
    end
  end
  finish(status)
  return status
end

return M
