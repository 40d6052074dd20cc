--- coproc.monitor: a worker process that samples memory (RSS, VMS, PSS, USS)
-- and CPU of a process and its descendants from /proc, takes notes, writes a
-- log and draws plots. Also `coproc.Monitor`. See docs/monitor.md.
--
--   local m <close> = coproc.Monitor{ snapshot_seconds = 0.05, fig_path = "mem.png" }:start()
--   m:add_note("starting workers")
--   ...
--   local stats = m:get_stats()
--   stats:save_memory_plot("mem.png", { font_size = 8 })
--
-- Sampling runs only in the worker; the host sends notes and requests.
local core = require "coproc.core"
local C = core.monitor

local M = {}

-- Fields of a sample, in CSV/JSON order. cpu is percent of one core.
local FIELDS = { "rss", "vms", "pss", "uss", "cpu" }
local NAN = 0 / 0
M.FIELDS = FIELDS

local DEFAULTS = {
  pid = nil,               -- process to watch; default: the host
  snapshot_seconds = 0.25, -- sampling interval
  include_children = true, -- descendants too
  log_path = nil,          -- notes as readable lines, appended as they come
  fig_path = nil,          -- plot redrawn while running (.png or .svg)
  save_fig_freq = 10,      -- redraw every N samples ...
  fig_min_seconds = 1.0,   -- ... but not more often than this (drawing costs ~10-50 ms)
  smaps_seconds = 0.5,     -- PSS/USS (smaps_rollup: ~10-100 us per process) re-read this often
  rescan_seconds = 0.2,    -- look for new descendants this often (and when one exits)
  metric = "rss",          -- what plots show
  font_size = nil,         -- plot text size in points
  verbose = false,
}
M.DEFAULTS = DEFAULTS

---------------------------------------------------------------------------
-- Formatting helpers
---------------------------------------------------------------------------

local function human_bytes(b)
  if b ~= b or b == nil or b == false then return "?" end
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while b >= 1024 and i < #units do b = b / 1024; i = i + 1 end
  return i == 1 and ("%d B"):format(b) or ("%.1f %s"):format(b, units[i])
end
M.human_bytes = human_bytes

local function wall_string(t)
  return os.date("%Y-%m-%d %H:%M:%S", math.floor(t)) .. (".%03d"):format(math.floor((t % 1) * 1000))
end

-- One readable line for a note (log file and print).
local function note_line(n, wall0)
  local mem = ("RSS %s"):format(human_bytes(n.rss))
  if n.pss == n.pss then mem = mem .. ("  PSS %s"):format(human_bytes(n.pss)) end
  if n.uss == n.uss then mem = mem .. ("  USS %s"):format(human_bytes(n.uss)) end
  local text = tostring(n.note)
  if n.details ~= nil then text = text .. ": " .. tostring(n.details) end
  return ("%s  +%.3fs  %s  CPU %.0f%%  | %s"):format(wall_string(wall0 + n.t), n.t, mem, n.cpu or 0, text)
end

---------------------------------------------------------------------------
-- Stats: samples and notes, per process and total
---------------------------------------------------------------------------
-- stats = {
--   pid, start_time (epoch s), interval, hz,
--   t = {...},                             -- sample times, s since start
--   total = { rss = {...}, vms, pss, uss, cpu, nprocs },  -- one entry per t
--   procs = { { pid, name, start, i0 = first index into t, rss = {...}, ... } },
--   notes = { { t, note, details, rss, vms, pss, uss, cpu, label } },
-- }
-- Unknown PSS/USS (no permission for smaps_rollup) are NaN.

local Stats = {}
Stats.__index = Stats
Stats.__name = "coproc.monitor.Stats"
M.Stats = Stats

local function new_stats(pid, interval)
  local total = { nprocs = {} }
  for _, f in ipairs(FIELDS) do total[f] = {} end
  return setmetatable({ pid = pid, interval = interval, hz = C.hz(), start_time = C.time(),
    t = {}, total = total, procs = {}, notes = {} }, Stats)
end

--- Wrap a plain table (as received from the worker or decoded) as Stats.
function Stats.wrap(t) return setmetatable(t, Stats) end

function Stats:__tostring()
  local peak = 0
  for _, v in ipairs(self.total.rss) do if v > peak then peak = v end end
  return ("coproc.monitor.Stats(pid %s, %d samples, %d processes, %d notes, peak RSS %s)"):format(
    tostring(self.pid), #self.t, #self.procs, #self.notes, human_bytes(peak))
end

--- Peak of a total series (default rss), in bytes.
function Stats:peak(field)
  local m = 0
  for _, v in ipairs(self.total[field or "rss"]) do if v == v and v > m then m = v end end
  return m
end

local function fmt_num(v)
  if v ~= v then return "" end
  if math.type(v) == "integer" then return tostring(v) end
  local s = ("%.15g"):format(v)
  if tonumber(s) ~= v then s = ("%.17g"):format(v) end
  return s
end

local function csv_field(s)
  s = tostring(s)
  if s:find('[,"\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

--- Write the samples as CSV, one row per (time, process) plus a "total" row
-- per time: time_s,pid,name,rss,vms,pss,uss,cpu_percent. Bytes; unknown
-- values empty. With opts.notes_path the notes go to a second CSV.
function Stats:to_csv(path, opts)
  local f = assert(io.open(path, "w"))
  f:write("time_s,pid,name,rss,vms,pss,uss,cpu_percent\n")
  local rows = {}
  for i, t in ipairs(self.t) do
    local tot = self.total
    rows[#rows + 1] = ("%s,total,total,%s,%s,%s,%s,%s\n"):format(fmt_num(t), fmt_num(tot.rss[i]),
      fmt_num(tot.vms[i]), fmt_num(tot.pss[i]), fmt_num(tot.uss[i]), fmt_num(tot.cpu[i]))
    if #rows >= 512 then f:write(table.concat(rows)); rows = {} end
  end
  f:write(table.concat(rows))
  for _, p in ipairs(self.procs) do
    rows = {}
    local name = csv_field(p.name)
    for k = 1, #p.rss do
      rows[#rows + 1] = ("%s,%d,%s,%s,%s,%s,%s,%s\n"):format(fmt_num(self.t[p.i0 + k - 1]), p.pid, name,
        fmt_num(p.rss[k]), fmt_num(p.vms[k]), fmt_num(p.pss[k]), fmt_num(p.uss[k]), fmt_num(p.cpu[k]))
      if #rows >= 512 then f:write(table.concat(rows)); rows = {} end
    end
    f:write(table.concat(rows))
  end
  f:close()
  if opts and opts.notes_path then
    f = assert(io.open(opts.notes_path, "w"))
    f:write("time_s,note,details,rss,vms,pss,uss,cpu_percent\n")
    for _, n in ipairs(self.notes) do
      f:write(("%s,%s,%s,%s,%s,%s,%s,%s\n"):format(fmt_num(n.t), csv_field(n.note),
        n.details == nil and "" or csv_field(n.details), fmt_num(n.rss), fmt_num(n.vms),
        fmt_num(n.pss), fmt_num(n.uss), fmt_num(n.cpu)))
    end
    f:close()
  end
  return self
end

local function parse_csv_line(line)
  local out, i, n = {}, 1, #line
  while i <= n + 1 do
    if line:sub(i, i) == '"' then
      local buf, j = {}, i + 1
      while true do
        local q = line:find('"', j, true)
        if not q then error("malformed CSV line: " .. line) end
        buf[#buf + 1] = line:sub(j, q - 1)
        if line:sub(q + 1, q + 1) == '"' then buf[#buf + 1] = '"'; j = q + 2 else i = q + 2; break end
      end
      out[#out + 1] = table.concat(buf)
    else
      local c = line:find(",", i, true) or (n + 1)
      out[#out + 1] = line:sub(i, c - 1)
      i = c + 1
    end
  end
  return out
end

local function csv_num(s)
  if s == "" then return NAN end
  return math.tointeger(tonumber(s)) or tonumber(s)
end

--- Read back a CSV written by to_csv (notes are not in it).
function Stats.from_csv(path)
  local f = assert(io.open(path, "r"))
  local header = f:read("l")
  if header ~= "time_s,pid,name,rss,vms,pss,uss,cpu_percent" then
    f:close()
    error("not a coproc monitor CSV: " .. path, 2)
  end
  local s = setmetatable({ t = {}, total = { nprocs = {} }, procs = {}, notes = {} }, Stats)
  for _, fld in ipairs(FIELDS) do s.total[fld] = {} end
  local index_of, by_pid = {}, {}
  for line in f:lines() do
    local r = parse_csv_line(line)
    local t = csv_num(r[1])
    if r[2] == "total" then
      s.t[#s.t + 1] = t
      index_of[r[1]] = #s.t
      for k, fld in ipairs(FIELDS) do s.total[fld][#s.t] = csv_num(r[3 + k]) end
    else
      local pid = math.tointeger(tonumber(r[2]))
      local p = by_pid[pid]
      if not p then
        p = { pid = pid, name = r[3], i0 = index_of[r[1]] }
        for _, fld in ipairs(FIELDS) do p[fld] = {} end
        by_pid[pid] = p
        s.procs[#s.procs + 1] = p
      end
      for k, fld in ipairs(FIELDS) do p[fld][#p[fld] + 1] = csv_num(r[3 + k]) end
    end
  end
  f:close()
  for i = 1, #s.t do s.total.nprocs[i] = 0 end
  for _, p in ipairs(s.procs) do
    for k = 1, #p.rss do local i = p.i0 + k - 1; s.total.nprocs[i] = s.total.nprocs[i] + 1 end
  end
  return s
end

-- Minimal JSON: enough for stats (numbers, strings, booleans, arrays, maps).
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local map = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
    return map[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function json_encode(v, out)
  local tv = type(v)
  if tv == "table" then
    if #v > 0 or next(v) == nil then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        json_encode(v[i], out)
      end
      out[#out + 1] = "]"
    else
      out[#out + 1] = "{"
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = json_string(k) .. ":"
        json_encode(v[k] == nil and v[math.tointeger(tonumber(k))] or v[k], out)
      end
      out[#out + 1] = "}"
    end
  elseif tv == "number" then
    out[#out + 1] = v ~= v and "null" or (v == math.huge or v == -math.huge) and "null" or fmt_num(v)
  elseif tv == "string" then
    out[#out + 1] = json_string(v)
  elseif tv == "boolean" then
    out[#out + 1] = tostring(v)
  else
    out[#out + 1] = "null"
  end
end

local function json_decode(s)
  local i = 1
  local function ws() i = s:find("[^ \t\r\n]", i) or #s + 1 end
  local value
  local function str()
    local out = {}
    i = i + 1
    while true do
      local c = s:sub(i, i)
      if c == '"' then i = i + 1; break
      elseif c == "\\" then
        local e = s:sub(i + 1, i + 1)
        if e == "u" then
          out[#out + 1] = utf8.char(tonumber(s:sub(i + 2, i + 5), 16)); i = i + 6
        else
          out[#out + 1] = ({ n = "\n", r = "\r", t = "\t", b = "\b", f = "\f" })[e] or e; i = i + 2
        end
      elseif c == "" then error("unterminated JSON string")
      else
        local j = s:find('["\\]', i) or #s + 1
        out[#out + 1] = s:sub(i, j - 1); i = j
      end
    end
    return table.concat(out)
  end
  function value()
    ws()
    local c = s:sub(i, i)
    if c == "{" then
      local t = {}
      i = i + 1; ws()
      if s:sub(i, i) == "}" then i = i + 1; return t end
      while true do
        ws(); local k = str(); ws()
        if s:sub(i, i) ~= ":" then error("JSON: ':' expected at " .. i) end
        i = i + 1
        t[k] = value(); ws()
        local d = s:sub(i, i); i = i + 1
        if d == "}" then return t elseif d ~= "," then error("JSON: ',' or '}' expected at " .. i) end
      end
    elseif c == "[" then
      local t = {}
      i = i + 1; ws()
      if s:sub(i, i) == "]" then i = i + 1; return t end
      while true do
        t[#t + 1] = value(); ws()
        local d = s:sub(i, i); i = i + 1
        if d == "]" then return t elseif d ~= "," then error("JSON: ',' or ']' expected at " .. i) end
      end
    elseif c == '"' then return str()
    elseif s:sub(i, i + 3) == "true" then i = i + 4; return true
    elseif s:sub(i, i + 4) == "false" then i = i + 5; return false
    elseif s:sub(i, i + 3) == "null" then i = i + 4; return NAN -- only numbers are ever null here
    else
      local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
      if not num or num == "" then error("JSON: unexpected '" .. c .. "' at " .. i) end
      i = i + #num
      return math.tointeger(tonumber(num)) or tonumber(num)
    end
  end
  local v = value()
  return v
end
M.json_encode = function(v) local out = {}; json_encode(v, out); return table.concat(out) end
M.json_decode = json_decode

--- Write everything (samples per process and total, notes) as JSON.
function Stats:to_json(path)
  local f = assert(io.open(path, "w"))
  local out = {}
  json_encode(self, out)
  f:write(table.concat(out), "\n")
  f:close()
  return self
end

--- Read back a JSON file written by to_json.
function Stats.from_json(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("a")
  f:close()
  return setmetatable(json_decode(s), Stats)
end

-- At most max points per line: keep each bucket's largest value (peaks
-- matter in a memory plot) at the bucket's time.
local function thin(xs, ys, max)
  local n = #ys
  if n <= max then return xs, ys end
  local ox, oy, per = {}, {}, n / max
  for b = 0, max - 1 do
    local lo, hi = math.floor(b * per) + 1, math.min(n, math.floor((b + 1) * per))
    local best = lo
    for k = lo + 1, hi do if ys[k] > ys[best] then best = k end end
    ox[#ox + 1], oy[#oy + 1] = xs[best], ys[best]
  end
  return ox, oy
end

--- Draw memory over time: one line per process and the total, notes as
-- labels on the total's curve. opts: font_size, include_notes (default
-- true), metric ("rss", "pss", "uss", "vms"), title, width, height.
-- Raises on failure (unwritable path, unknown extension).
function Stats:save_memory_plot(path, opts)
  opts = opts or {}
  if type(path) ~= "string" then error("bad argument #1 to 'save_memory_plot' (path expected)", 2) end
  if not C.have_plot then error("coproc was built without PLplot (COPROC_PLOT=OFF)", 2) end
  local metric = opts.metric or "rss"
  if not self.total[metric] then error("bad option 'metric' (rss, vms, pss, uss expected, got " .. tostring(metric) .. ")", 2) end
  local MAXPTS = 3000
  local lines = {}
  local tx, ty = thin(self.t, self.total[metric], MAXPTS)
  local root_name
  for _, p in ipairs(self.procs) do if p.pid == self.pid then root_name = p.name end end
  lines[1] = { label = ("total (%d process%s)"):format(#self.procs, #self.procs == 1 and "" or "es"),
    x = tx, y = ty, emphasis = true }
  if #self.procs > 1 then
    for _, p in ipairs(self.procs) do
      local xs = table.move(self.t, p.i0, p.i0 + #p[metric] - 1, 1, {})
      local x, y = thin(xs, p[metric], MAXPTS)
      lines[#lines + 1] = { label = ("%s (%d)"):format(p.name, p.pid), x = x, y = y }
    end
  end
  local notes = {}
  if opts.include_notes ~= false then
    for _, n in ipairs(self.notes) do
      if n.label ~= false then
        local text = tostring(n.note)
        if n.details ~= nil and opts.note_details then text = text .. ": " .. tostring(n.details) end
        notes[#notes + 1] = { x = n.t, y = n[metric], text = text }
      end
    end
  end
  local title = opts.title or ("Memory of %s (pid %s)%s"):format(root_name or "process", tostring(self.pid),
    #self.procs > 1 and " and its children" or "")
  local ok, err = C.plot { path = path, title = title, metric = metric:upper(), font_size = opts.font_size,
    width = opts.width, height = opts.height, lines = lines, notes = notes }
  if not ok then error("save_memory_plot: " .. err, 2) end
  return self
end

---------------------------------------------------------------------------
-- The worker: samples on a clock, serves notes and requests in between
---------------------------------------------------------------------------

local Sampler = {}
Sampler.__index = Sampler

local function new_sampler(kw)
  local track, err = C.proctrack(kw.pid, kw.include_children, C.getpid()) -- never watch ourselves
  if not track then error("coproc.Monitor: " .. err, 0) end
  local iv = kw.snapshot_seconds
  local s = setmetatable({
    kw = kw, track = track, buf = {}, n = 0,
    stats = new_stats(kw.pid, iv),
    recs = {},               -- track id -> proc record
    t0 = kw.t0,              -- monotonic time of the host's start(): t = 0
    smaps_every = math.max(1, math.floor((kw.smaps_seconds or 0.5) / iv + 0.5)),
    rescan_every = math.max(1, math.floor((kw.rescan_seconds or 0.2) / iv + 0.5)),
    fig_due = 0,
  }, Sampler)
  s.stats.start_time = kw.wall0
  if kw.log_path then
    local f, e = io.open(kw.log_path, "a")
    if not f then error("coproc.Monitor: cannot open log_path: " .. tostring(e), 0) end
    f:setvbuf("line")
    s.log = f
  end
  return s
end

-- One sample of every tracked process, appended to the stats. Returns the
-- number of processes seen. track:sample fills the flat array buf, 9 slots
-- per process (id, pid, start, rss, vms, pss, uss, cpu_ns, name; see
-- bindings/l_monitor.c): no table or string is made per process per sample.
function Sampler:sample(now, smaps)
  local buf = self.buf
  local n, vanished = self.track:sample(buf, smaps or self.n % self.smaps_every == 0)
  self.n = self.n + 1
  if vanished > 0 or self.n % self.rescan_every == 0 then self.track:rescan() end
  if n == 0 then return 0 end
  local st = self.stats
  local i = #st.t + 1
  local t = now - self.t0
  st.t[i] = t
  local recs, procs = self.recs, st.procs
  local rss, vms, pss, uss, cpu = 0, 0, 0, 0, 0
  local pss_known = true
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
    if dt > 0 then c = (ns - r.last_ns) / dt * 1e-7 end -- ns per s, as percent of a core
    r.last_ns, r.last_t = ns, t
    local m, v, p, u = buf[b + 4], buf[b + 5], buf[b + 6], buf[b + 7]
    if not p then p, u, pss_known = NAN, NAN, false end
    r.rss[j], r.vms[j], r.pss[j], r.uss[j], r.cpu[j] = m, v, p, u, c
    rss, vms, cpu = rss + m, vms + v, cpu + c
    if p == p then pss, uss = pss + p, uss + u end
  end
  local tot = st.total
  tot.rss[i], tot.vms[i], tot.cpu[i], tot.nprocs[i] = rss, vms, cpu, n
  tot.pss[i], tot.uss[i] = pss_known and pss or NAN, pss_known and uss or NAN
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
  return { pid = st.pid, interval = st.interval, hz = st.hz, start_time = st.start_time,
    t = st.t, total = st.total, procs = procs, notes = st.notes }
end

function Sampler:save_fig(force)
  local kw = self.kw
  if not kw.fig_path then return end
  local now = C.now()
  if not force and now < self.fig_due then return end
  self.fig_due = now + (kw.fig_min_seconds or 1.0)
  local stats = setmetatable(self:export(), Stats)
  stats:save_memory_plot(kw.fig_path, { font_size = kw.font_size, metric = kw.metric })
  if kw.verbose then io.stderr:write(("coproc.Monitor: plot saved to %s\n"):format(kw.fig_path)) end
end

function Sampler:note(msg)
  local now = C.now()
  self:sample(now, true) -- a fresh sample, PSS/USS included: the memory at this moment
  local tot, i = self.stats.total, #self.stats.t
  local t = (msg.t or now) - self.t0
  local n = { t = t, note = msg.note, details = msg.details, label = msg.do_label ~= false }
  if i > 0 then
    n.rss, n.vms, n.pss, n.uss, n.cpu = tot.rss[i], tot.vms[i], tot.pss[i], tot.uss[i], tot.cpu[i]
  else
    n.rss, n.vms, n.pss, n.uss, n.cpu = 0, 0, NAN, NAN, 0
  end
  self.stats.notes[#self.stats.notes + 1] = n
  if msg.do_log ~= false and self.log then self.log:write(note_line(n, self.stats.start_time), "\n") end
  if msg.do_print ~= false then
    io.stdout:write(("[monitor +%.2fs RSS %s] %s%s\n"):format(t, human_bytes(n.rss), tostring(n.note),
      n.details ~= nil and (": " .. tostring(n.details)) or ""))
    io.stdout:flush()
  end
end

local function finish(s)
  s:sample(C.now())
  if s.log then
    s.log:write(("%s  +%.3fs  monitor stopped after %d samples, peak RSS %s\n"):format(
      wall_string(C.time()), C.now() - s.t0, #s.stats.t, human_bytes(s.stats:peak("rss"))))
    s.log:close()
    s.log = nil
  end
  s:save_fig(true)
  s.track:close()
end

--- Worker entry: fn(messenger, kwargs) as WorkerResource runs it.
function M._worker(m, kw)
  local coproc = require "coproc"
  local s = new_sampler(kw)
  if s.log then
    s.log:write(("%s  +%.3fs  monitor started: pid %d%s, every %g s\n"):format(wall_string(kw.wall0),
      C.now() - kw.t0, kw.pid, kw.include_children and " and its children" or "", kw.snapshot_seconds))
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
    elseif op == "stop" then
      finish(s)
      m:send_reply(true)
      m:flush()
      return true
    end
    return false
  end

  -- Everything that has arrived, including messages the messenger already
  -- read into its queue (the socket is then no longer readable). True when
  -- the worker must end.
  local function drain()
    repeat
      local ok, msg = pcall(m.receive_blocking, m, nil, 0)
      if not ok then
        if coproc.is(msg, coproc.ResourceRequestedClose) then finish(s); return true end
        if coproc.is(msg, coproc.Timeout) then return false end -- a partial frame: more to come
        error(msg, 0)
      end
      if handle(msg) then return true end
    until not m:available()
    return false
  end

  local next_t = C.now()
  local since_fig = 0
  while true do
    local now = C.now()
    local wait = next_t - now
    if wait > 0 then
      -- The messenger's socket is the sampling clock: a message before the
      -- next sample is served at once; a quiet wait means a sample is due.
      -- A bare poll() per sample costs ~40% less CPU than a messenger
      -- wait (receive_blocking with a timeout raises a Timeout object each
      -- time), which matters at 10 ms.
      -- queue_size() first: the messenger may have read a message into its
      -- queue already (while sending a reply), leaving the socket quiet. It
      -- makes no system call, unlike available(), which reads the socket.
      if m:queue_size() > 0 or C.wait_readable(fd, wait) then
        if drain() then return end
        goto continue
      end
      now = C.now()
    end
    s:sample(now)
    since_fig = since_fig + 1
    if since_fig >= fig_every then since_fig = 0; s:save_fig(false) end
    next_t = next_t + iv
    if next_t < now then next_t = now + iv end -- fell behind: skip, do not burst
    ::continue::
  end
end

---------------------------------------------------------------------------
-- The host side
---------------------------------------------------------------------------

local Monitor = {}
Monitor.__index = Monitor
Monitor.__name = "coproc.Monitor"

local function bad(msg) error("coproc.Monitor: " .. msg, 3) end

-- Check that path can be written, without leaving a new empty file behind.
local function check_writable(path, what)
  if type(path) ~= "string" or path == "" then bad(what .. " must be a file path") end
  local existed = io.open(path, "r")
  if existed then existed:close() end
  local f, e = io.open(path, "a")
  if not f then bad(("cannot write %s '%s': %s"):format(what, path, e)) end
  f:close()
  if not existed then os.remove(path) end
end

--- Monitor(opts) --> monitor (not started). Options: see DEFAULTS. Bad
-- options raise here with a message naming the option.
function M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then bad("options must be a table") end
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if DEFAULTS[k] == nil and k ~= "pid" and k ~= "log_path" and k ~= "fig_path" and k ~= "font_size" then
      bad(("unknown option '%s'"):format(tostring(k)))
    end
    o[k] = v
  end
  local iv = o.snapshot_seconds
  if type(iv) ~= "number" or iv ~= iv or iv <= 0 or iv == math.huge then
    bad(("snapshot_seconds must be a positive number of seconds, got %s"):format(tostring(iv)))
  end
  if o.pid == nil then o.pid = C.getpid() end
  if math.type(o.pid) ~= "integer" or o.pid <= 0 then bad(("pid must be a positive integer, got %s"):format(tostring(o.pid))) end
  if not C.exists(o.pid) then bad(("no process with pid %d"):format(o.pid)) end
  if math.type(o.save_fig_freq) ~= "integer" or o.save_fig_freq < 1 then
    bad(("save_fig_freq must be an integer >= 1, got %s"):format(tostring(o.save_fig_freq)))
  end
  for _, k in ipairs { "fig_min_seconds", "smaps_seconds", "rescan_seconds" } do
    if type(o[k]) ~= "number" or o[k] < 0 then bad(("%s must be a number >= 0"):format(k)) end
  end
  if o.log_path ~= nil then check_writable(o.log_path, "log_path") end
  if o.fig_path ~= nil then
    if type(o.fig_path) ~= "string" or not (o.fig_path:lower():match("%.png$") or o.fig_path:lower():match("%.svg$")) then
      bad(("fig_path must end in .png or .svg, got %s"):format(tostring(o.fig_path)))
    end
    if not C.have_plot then bad("fig_path needs PLplot, and coproc was built without it") end
    check_writable(o.fig_path, "fig_path")
  end
  if not ({ rss = 1, vms = 1, pss = 1, uss = 1 })[o.metric] then bad("metric must be rss, vms, pss or uss") end
  return setmetatable({ opts = o }, Monitor)
end

--- Start the worker; returns the monitor (so `Monitor{...}:start()` chains).
-- Raises if the worker cannot watch the process.
function Monitor:start()
  local coproc = require "coproc"
  if self.worker and self.worker:is_alive() then
    error("coproc.Monitor: already started", 2)
  end
  local kw = {}
  for k, v in pairs(self.opts) do kw[k] = v end
  kw.t0, kw.wall0 = C.now(), C.time()
  self.t0 = kw.t0
  local w = coproc.WorkerResource(function(m, args)
    return require("coproc.monitor")._worker(m, args)
  end)
  w:start(kw)
  self.worker, self.messenger = w, w.messenger
  -- Wait until the worker has opened the process set, so a bad pid or log
  -- path fails here and notes taken right after start are not lost.
  local ok, err = pcall(function()
    self.messenger:send_request({ op = "ready" })
    local r = self.messenger:receive_blocking(nil, 30)
    self.pids_at_start = r.pids
  end)
  if not ok then
    w:close()
    self.worker, self.messenger = nil, nil
    local msg = type(err) == "table" and err.message or tostring(err)
    error(msg:find("coproc.Monitor", 1, true) and msg or ("coproc.Monitor: worker failed to start: " .. tostring(msg)), 2)
  end
  return self
end

local function need(self)
  if not self.messenger then error("coproc.Monitor: not running (call start())", 3) end
  return self.messenger
end

--- Record a note with the time and the memory at that moment. opts:
-- do_log (to log_path), do_label (on plots), do_print (to stdout); all
-- default true. Positional booleans also work: add_note(note, details, false).
function Monitor:add_note(note, details, opts, do_label, do_print)
  local m = need(self)
  local o = type(opts) == "table" and opts or { do_log = opts, do_label = do_label, do_print = do_print }
  m:send_norequest({ op = "note", t = C.now(), note = tostring(note), details = details ~= nil and tostring(details) or nil,
    do_log = o.do_log ~= false, do_label = o.do_label ~= false, do_print = o.do_print ~= false })
  return self
end

--- Only print (with the memory); no log line, no plot label.
function Monitor:print(note, details)
  return self:add_note(note, details, { do_log = false, do_label = false, do_print = true })
end
--- Only a plot label.
function Monitor:label(note, details)
  return self:add_note(note, details, { do_log = false, do_label = true, do_print = false })
end
--- Only a log line.
function Monitor:log(note, details)
  return self:add_note(note, details, { do_log = true, do_label = false, do_print = false })
end

local function request(self, msg, timeout)
  local m = need(self)
  m:send_request(msg)
  return m:receive_blocking(nil, timeout or 60)
end

--- Look for new descendants now (they are also found on their own within
-- rescan_seconds). Returns the number of processes watched.
function Monitor:update_child_processes()
  return request(self, { op = "rescan" })
end

--- Samples and notes so far, as a Stats object.
function Monitor:get_stats()
  return setmetatable(request(self, { op = "stats" }), Stats)
end

--- Draw the plot now (in the host) from the current stats.
function Monitor:save_memory_plot(path, opts)
  self:get_stats():save_memory_plot(path, opts)
  return self
end

function Monitor:is_alive() return self.worker ~= nil and self.worker:is_alive() end
function Monitor:worker_pid() return self.worker and self.worker:pid() end

--- Stop sampling: a last sample, the final plot (fig_path), the log closed.
-- Safe to call twice.
function Monitor:stop()
  local w, m = self.worker, self.messenger
  if not w then return self end
  self.worker, self.messenger = nil, nil
  local ok, err = pcall(function()
    m:send_request({ op = "stop" })
    m:receive_blocking(nil, 120)
    w:join(10)
  end)
  w:close()
  if not ok then error(err, 2) end
  return self
end

function Monitor:__close(err)
  if err ~= nil then pcall(self.stop, self) else self:stop() end
end
Monitor.__gc = function(self) if self.worker then pcall(self.worker.close, self.worker) end end

function Monitor:__tostring()
  return ("coproc.Monitor(pid %d, every %g s, %s)"):format(self.opts.pid, self.opts.snapshot_seconds,
    self.worker and "running" or "stopped")
end

M.Monitor = setmetatable(M, { __call = function(_, opts) return M.new(opts) end })
M.MonitorClass = Monitor

---------------------------------------------------------------------------
-- Command line: coproc-lua -m coproc.monitor [options] -- command args...
---------------------------------------------------------------------------

local USAGE = [[
usage: coproc-lua -m coproc.monitor [options] [--] command [args...]
Runs command, samples the memory and CPU of its process tree until it exits,
and exits with its status.
  --interval S     seconds between samples (default 0.25)
  --csv FILE       write the samples as CSV
  --json FILE      write samples and notes as JSON
  --plot FILE      draw the memory plot (.png or .svg)
  --log FILE       append start/stop lines to FILE
  --metric M       plot rss (default), pss, uss or vms
  --no-children    watch the command only, not its descendants
  -q, --quiet      no summary on stderr
  -h, --help       this text]]

function M.main(args)
  args = args or {}
  local o = { interval = 0.25, children = true }
  local i = 1
  local function val(name)
    i = i + 1
    if args[i] == nil then error({ usage = name .. " needs a value" }) end
    return args[i]
  end
  local ok, perr = pcall(function()
    while i <= #args do
      local a = args[i]
      if a == "--" then i = i + 1; break
      elseif a == "-h" or a == "--help" then o.help = true; return
      elseif a == "--interval" then o.interval = tonumber(val(a)) or error({ usage = "--interval needs a number" })
      elseif a == "--csv" then o.csv = val(a)
      elseif a == "--json" then o.json = val(a)
      elseif a == "--plot" then o.plot = val(a)
      elseif a == "--log" then o.log = val(a)
      elseif a == "--metric" then o.metric = val(a)
      elseif a == "--no-children" then o.children = false
      elseif a == "-q" or a == "--quiet" then o.quiet = true
      elseif a:sub(1, 1) == "-" then error({ usage = "unknown option " .. a })
      else break end
      i = i + 1
    end
  end)
  if not ok then
    io.stderr:write("coproc.monitor: ", type(perr) == "table" and perr.usage or tostring(perr), "\n", USAGE, "\n")
    return 2
  end
  if o.help then print(USAGE); return 0 end
  local argv = table.move(args, i, #args, 1, {})
  if #argv == 0 then io.stderr:write("coproc.monitor: no command given\n", USAGE, "\n"); return 2 end
  if o.plot and not C.have_plot then io.stderr:write("coproc.monitor: built without PLplot: --plot unavailable\n"); return 2 end

  -- Validate options before running anything.
  local mon_opts = { snapshot_seconds = o.interval, include_children = o.children, log_path = o.log,
    metric = o.metric or "rss", pid = C.getpid() }
  local vok, verr = pcall(M.new, mon_opts)
  if not vok then io.stderr:write(tostring(verr), "\n"); return 2 end
  for _, k in ipairs { "csv", "json", "plot" } do
    if o[k] then
      local existed = io.open(o[k], "r")
      if existed then existed:close() end
      local f, e = io.open(o[k], "a")
      if not f then io.stderr:write("coproc.monitor: --", k, ": ", e, "\n"); return 2 end
      f:close()
      if not existed then os.remove(o[k]) end
    end
  end

  local cmd, err = C.spawn(argv)
  if not cmd then io.stderr:write("coproc.monitor: ", err, "\n"); return 127 end
  mon_opts.pid = cmd:pid()
  local mon = M.new(mon_opts)
  local sok, serr = pcall(mon.start, mon)
  if not sok then
    io.stderr:write(tostring(serr), "\n")
    cmd:kill(9); cmd:wait()
    return 1
  end
  local code = cmd:wait()
  local stats = mon:get_stats()
  mon:stop()
  local wok, werr = pcall(function()
    if o.csv then stats:to_csv(o.csv) end
    if o.json then stats:to_json(o.json) end
    if o.plot then stats:save_memory_plot(o.plot, { metric = o.metric }) end
  end)
  if not wok then io.stderr:write("coproc.monitor: ", tostring(werr), "\n") end
  if not o.quiet then
    io.stderr:write(("coproc.monitor: %s exited with %d; %d samples, %d processes, peak RSS %s\n"):format(
      argv[1], code, #stats.t, #stats.procs, human_bytes(stats:peak("rss"))))
  end
  return code
end

return M
