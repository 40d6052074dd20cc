--- coproc.monitor.sampler: the monitor's worker. It samples the watched
-- tree on a clock and serves the host's notes and requests in between.
-- Started by coproc.monitor (Monitor:start) as a WorkerResource function.
local core = require "coproc.core"
local errors = require "coproc.errors"
local format = require "coproc.monitor.format"
local Stats = require "coproc.monitor.stats"

local C = core.monitor
local NAN = 0 / 0
local micro = format.micro

local Sampler = {}
Sampler.__index = Sampler

local function new_sampler(kw)
  local track = C.proctrack(kw.pid, kw.include_children, core.getpid()) -- never watch ourselves
  local iv = kw.snapshot_seconds
  local s = setmetatable({
    kw = kw, track = track, buf = {}, n = 0,
    stats = Stats.new(kw.pid, iv, kw.metric, C.hz(), kw.wall0),
    recs = {},               -- track id -> proc record
    t0 = kw.t0,              -- monotonic time of the host's start(): t = 0
    -- Each sample re-reads smaps_rollup for this share of the processes,
    -- so each one's PSS is at most smaps_seconds old (estimated from its
    -- RSS in between, see src/proctrack.h); 0 never reads it.
    smaps_share = kw.smaps_seconds > 0 and math.min(1, iv / kw.smaps_seconds) or 0,
    rescan_every = math.max(1, math.floor((kw.rescan_seconds or 0.2) / iv + 0.5)),
    fig_due = 0,
  }, Sampler)
  if kw.log_path then
    local f, e, code = io.open(kw.log_path, "a")
    if not f then
      track:close()
      errors.raise(errors.OSError, ("cannot open log_path '%s': %s"):format(kw.log_path, e),
        { errno = code, call = "open", path = kw.log_path })
    end
    f:setvbuf("line")
    s.log = f
  end
  return s
end

-- One sample of every tracked process, appended to the stats. Returns the
-- number of processes seen. track:sample fills the flat array buf, 9 slots
-- per process (id, pid, start, rss, vms, pss, uss, cpu_ns, name; see
-- bindings/l_proctrack.c): no table or string is made per process per sample.
function Sampler:sample(now, smaps)
  local buf = self.buf
  local n, vanished = self.track:sample(buf, smaps and 1 or self.smaps_share)
  self.n = self.n + 1
  if vanished > 0 or self.n % self.rescan_every == 0 then self.track:rescan() end
  if n == 0 then return 0 end
  local st = self.stats
  local i = #st.t + 1
  local t = micro(now - self.t0)
  st.t[i] = t
  local recs, procs = self.recs, st.procs
  local metric = st.metric
  local by_rss = metric ~= "rss" and metric ~= "vms"
  local rss, vms, pss, uss, cpu, mem, fallback = 0, 0, 0, 0, 0, 0, 0
  local pss_known = false
  for b = 0, (n - 1) * 9, 9 do
    local r = recs[buf[b + 1]]
    local ns, name = buf[b + 8], buf[b + 9]
    if not r then
      r = { pid = buf[b + 2], name = name or "?", start = buf[b + 3], i0 = i, rss = {}, vms = {}, pss = {}, uss = {},
        cpu = {}, last_ns = ns, last_t = t }
      recs[buf[b + 1]] = r
      procs[#procs + 1] = r
    elseif name then
      r.name = name -- a fork that then execs changes its name
    end
    local j = i - r.i0 + 1
    local c = 0
    local dt = t - r.last_t
    if dt > 0 then c = micro((ns - r.last_ns) / dt * 1e-7) end -- ns per s, as percent of a core
    r.last_ns, r.last_t = ns, t
    local m, v, p, u = buf[b + 4], buf[b + 5], buf[b + 6], buf[b + 7]
    if not p then p, u = NAN, NAN end
    r.rss[j], r.vms[j], r.pss[j], r.uss[j], r.cpu[j] = m, v, p, u, c
    rss, vms, cpu = rss + m, vms + v, cpu + c
    if p == p then pss, uss, pss_known = pss + p, uss + u, true end
    -- The honest total: the metric where known, RSS where not (counted).
    local x = metric == "rss" and m or metric == "vms" and v or metric == "pss" and p or u
    if x ~= x then x = m; if by_rss then fallback = fallback + 1 end end
    mem = mem + x
  end
  local tot = st.total
  tot.rss[i], tot.vms[i], tot.cpu[i], tot.nprocs[i] = rss, vms, micro(cpu), n
  tot.pss[i], tot.uss[i] = pss_known and pss or NAN, pss_known and uss or NAN
  tot.mem[i], tot.mem_rss[i] = mem, fallback
  return n
end

-- The stats without the sampler's bookkeeping fields (sent to the host).
function Sampler:export()
  local st = self.stats
  local procs = {}
  for k, r in ipairs(st.procs) do
    procs[k] = { pid = r.pid, name = r.name, start = r.start, i0 = r.i0,
      rss = r.rss, vms = r.vms, pss = r.pss, uss = r.uss, cpu = r.cpu }
  end
  return { pid = st.pid, interval = st.interval, hz = st.hz, start_time = st.start_time, metric = st.metric,
    t = st.t, total = st.total, procs = procs, notes = st.notes }
end

function Sampler:save_fig(force)
  local kw = self.kw
  if not kw.fig_path then return end
  local now = core.now()
  if not force and now < self.fig_due then return end
  self.fig_due = now + (kw.fig_min_seconds or 1.0)
  local stats = Stats.wrap(self:export())
  stats:save_memory_plot(kw.fig_path, { font_size = kw.font_size, metric = kw.metric, include_cpu = kw.include_cpu })
  if kw.verbose then io.stderr:write(("coproc.Monitor: plot saved to %s\n"):format(kw.fig_path)) end
end

function Sampler:note(msg)
  local now = core.now()
  self:sample(now, true) -- a fresh sample, PSS/USS read now: the memory at this moment
  local tot, i = self.stats.total, #self.stats.t
  local t = micro((msg.t or now) - self.t0)
  local n = { t = t, note = msg.note, details = msg.details, label = msg.do_label ~= false }
  if i > 0 then
    n.rss, n.vms, n.pss, n.uss, n.cpu, n.mem = tot.rss[i], tot.vms[i], tot.pss[i], tot.uss[i], tot.cpu[i], tot.mem[i]
  else
    n.rss, n.vms, n.pss, n.uss, n.cpu, n.mem = 0, 0, NAN, NAN, 0, 0
  end
  self.stats.notes[#self.stats.notes + 1] = n
  if msg.do_log ~= false and self.log then self.log:write(format.note_line(n, self.stats.start_time), "\n") end
  if msg.do_print ~= false then
    io.stdout:write(("[monitor +%.2fs %s %s] %s%s\n"):format(t, self.stats.metric:upper(), format.bytes(n.mem),
      tostring(n.note), n.details ~= nil and (": " .. tostring(n.details)) or ""))
    io.stdout:flush()
  end
end

function Sampler:finish()
  self:sample(core.now())
  if self.log then
    self.log:write(("%s  +%.3fs  monitor stopped after %d samples, peak %s %s\n"):format(
      format.wall(core.time()), core.now() - self.t0, #self.stats.t, self.stats.metric:upper(),
      format.bytes(self.stats:peak())))
    self.log:close()
    self.log = nil
  end
  self:save_fig(true)
  self.track:close()
end

--- Worker entry: fn(messenger, kwargs) as WorkerResource runs it.
local function run(m, kw)
  local coproc = require "coproc"
  local s = new_sampler(kw)
  if s.log then
    s.log:write(("%s  +%.3fs  monitor started: pid %d%s, every %g s\n"):format(format.wall(kw.wall0),
      core.now() - kw.t0, kw.pid, kw.include_children and " and its children" or "", kw.snapshot_seconds))
  end
  local iv = kw.snapshot_seconds
  local fig_every = math.max(1, kw.save_fig_freq or 10)
  local fd = m:fileno()

  -- Serve one request; true when asked to stop.
  local function handle(msg)
    if type(msg) ~= "table" then return false end
    local op = msg.op
    if op == "note" then s:note(msg)
    elseif op == "stats" then m:send_reply(s:export())
    elseif op == "rescan" then m:send_reply(s.track:rescan())
    elseif op == "ready" then m:send_reply({ pids = s.track:pids() })
    elseif op == "smaps_reads" then m:send_reply(s.track:smaps_reads())
    elseif op == "stop" then
      s:finish()
      m:send_reply(true)
      pcall(m.flush, m, 5)   -- bounded: a host that stopped reading cannot hold the worker
      return true
    end
    return false
  end

  -- Everything that has arrived, including messages the messenger already
  -- read into its queue (the socket is then no longer readable). True when
  -- the worker must end.
  local function drain()
    repeat
      local msg, err = m:try_receive()
      if err then
        if coproc.is(err, coproc.ResourceRequestedClose) then s:finish(); return true end
        if coproc.is(err, coproc.Timeout) then return false end -- a partial frame: more to come
        error(err, 0)
      end
      if handle(msg) then return true end
    until not m:available()
    return false
  end

  local next_t = core.now()
  local since_fig = 0
  while true do
    local now = core.now()
    local wait = next_t - now
    if wait > 0 then
      -- The messenger's socket is the sampling clock: a message before the
      -- next sample is served at once; a quiet wait means a sample is due.
      -- A bare poll() per sample, not m:try_receive(nil, wait): a timed
      -- messenger wait goes through libev's epoll backend, whose timeouts
      -- have a 1 ms resolution (a 0.2 ms try_receive takes 1.2 ms), so
      -- every sample of a 10 ms clock would come up to 1 ms late; ppoll
      -- keeps it to microseconds at the same CPU cost (bench/monitor_bench.lua,
      -- docs/design-notes.md). queue_size() first: the messenger
      -- may have read a message into its queue already (while sending a
      -- reply), leaving the socket quiet; it makes no system call.
      if m:queue_size() > 0 or C.wait_readable(fd, wait) then
        if drain() then return end
        goto continue
      end
      now = core.now()
    end
    s:sample(now)
    since_fig = since_fig + 1
    if since_fig >= fig_every then since_fig = 0; s:save_fig(false) end
    next_t = next_t + iv
    do
      local after = core.now()
      if next_t < after then
        next_t = after + iv -- fell behind: skip, do not burst
        -- and serve the host now: a monitor slower than its interval would
        -- otherwise never answer (after the sample: a stop still has one)
        if (m:queue_size() > 0 or C.wait_readable(fd, 0)) and drain() then return end
      end
    end
    ::continue::
  end
end

return { run = run, Sampler = Sampler }
