--- coproc.monitor.stats: what a monitor collected (samples per process and
-- total, notes), its CSV and JSON forms, and the preparation of a plot
-- (which lines, their names, thinning) for coproc.plot. See docs/monitor.md.
local errors = require "coproc.errors"
local options = require "coproc.options"
local format = require "coproc.monitor.format"

local NAN = 0 / 0
local FIELDS = { "rss", "vms", "pss", "uss", "cpu" }
local METRICS = { rss = true, vms = true, pss = true, uss = true }

local Stats = {}
Stats.__index = Stats
Stats.__name = "coproc.monitor.Stats"
Stats.FIELDS = FIELDS
Stats.METRICS = METRICS

--- Empty stats for pid sampled every interval s; metric: what the honest
-- total (total.mem) and the plots count ("pss" by default).
function Stats.new(pid, interval, metric, hz, start_time)
  local total = { nprocs = {}, mem = {}, mem_rss = {} }
  for _, f in ipairs(FIELDS) do total[f] = {} end
  return setmetatable({ pid = pid, interval = interval, hz = hz, start_time = start_time,
    metric = metric or "pss", t = {}, total = total, procs = {}, notes = {} }, Stats)
end

--- Wrap a plain table (as received from the worker or decoded) as Stats.
function Stats.wrap(t)
  t.metric = t.metric or "rss"
  return setmetatable(t, Stats)
end

function Stats:__tostring()
  return ("coproc.monitor.Stats(pid %s, %d samples, %d processes, %d notes, peak %s %s)"):format(
    tostring(self.pid), #self.t, #self.procs, #self.notes, self.metric:upper(), format.bytes(self:peak()))
end

--- Peak of a total series in bytes (default: the honest total, total.mem).
function Stats:peak(field)
  local m = 0
  local s = field and self.total[field] or self.total.mem or self.total.rss
  for _, v in ipairs(s or {}) do if v == v and v > m then m = v end end
  return m
end

-- A process's memory by metric: PSS/USS where the kernel let us read it,
-- else its RSS (counted, and named in the CSV and the legend).
local function proc_mem(p, k, metric)
  local v = p[metric][k]
  if v == nil or v ~= v then return p.rss[k], metric ~= "rss" end
  return v, false
end

--- The memory series by metric: total (one value per t), the number of
-- processes counted by RSS at each t, and per process (index like procs).
function Stats:series(metric)
  metric = metric or self.metric
  local tot, fb, per = {}, {}, {}
  for i = 1, #self.t do tot[i], fb[i] = 0, 0 end
  for k, p in ipairs(self.procs) do
    local s = {}
    for j = 1, #p.rss do
      local v, byrss = proc_mem(p, j, metric)
      s[j] = v
      local i = p.i0 + j - 1
      if tot[i] then
        tot[i] = tot[i] + v
        if byrss then fb[i] = fb[i] + 1 end
      end
    end
    per[k] = s
  end
  -- The worker's own total when it counted the same metric (a sample with
  -- no process left has no rows to sum).
  if metric == self.metric and #self.total.mem == #self.t then
    for i = 1, #self.t do tot[i] = self.total.mem[i]; fb[i] = self.total.mem_rss[i] or fb[i] end
  end
  return tot, fb, per
end

---------------------------------------------------------------------------
-- CSV and JSON
---------------------------------------------------------------------------

local CSV_HEADER = "time_s,pid,name,rss,vms,pss,uss,cpu_percent,memory,memory_metric"
local OLD_CSV_HEADER = "time_s,pid,name,rss,vms,pss,uss,cpu_percent"

local function fmt_num(v)
  if v == nil or v ~= v then return "" end
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

-- Open path for writing or raise an OSError naming it.
local function open_out(path, what)
  if type(path) ~= "string" or path == "" then
    error(("bad argument #1 (a %s file path expected, got %s)"):format(what, type(path)), 3)
  end
  local f, msg, code = io.open(path, "w")
  if not f then
    errors.raise(errors.OSError, ("cannot write %s file '%s': %s"):format(what, path, msg),
      { errno = code, call = "open", path = path })
  end
  return f
end

local function close_out(f, path, what)
  local ok, msg, code = f:close()
  if not ok then
    errors.raise(errors.OSError, ("cannot write %s file '%s': %s"):format(what, path, tostring(msg)),
      { errno = code, call = "close", path = path })
  end
end

local function write_out(f, path, what, s)
  local ok, msg, code = f:write(s)
  if not ok then
    f:close()
    errors.raise(errors.OSError, ("cannot write %s file '%s': %s"):format(what, path, tostring(msg)),
      { errno = code, call = "write", path = path })
  end
end

--- Write the samples as CSV: a "total" row per time, then a row per
-- process sample. Columns: time_s,pid,name,rss,vms,pss,uss,cpu_percent (bytes,
-- unknown values empty), then memory and memory_metric: the value the plot
-- shows for that row and what it is: "pss" (or the metric asked for),
-- "rss" for a process whose PSS could not be read, and for the total
-- "pss+rss:N" when N processes were counted by RSS. With opts.notes_path
-- the notes go to a second CSV. Raises OSError naming the file.
local CSV_OPTS = { notes_path = "string" }

function Stats:to_csv(path, opts)
  opts = options.check(opts, CSV_OPTS, "to_csv", 2)
  local f = open_out(path, "CSV")
  local metric = self.metric
  local tot, fb, per = self:series(metric)
  local buf = { CSV_HEADER, "\n" }
  local function flush()
    if #buf >= 1024 then write_out(f, path, "CSV", table.concat(buf)); buf = {} end
  end
  local T = self.total
  for i, t in ipairs(self.t) do
    local mm = (fb[i] or 0) > 0 and ("%s+rss:%d"):format(metric, fb[i]) or metric
    buf[#buf + 1] = ("%s,total,total,%s,%s,%s,%s,%s,%s,%s\n"):format(fmt_num(t), fmt_num(T.rss[i]),
      fmt_num(T.vms[i]), fmt_num(T.pss[i]), fmt_num(T.uss[i]), fmt_num(T.cpu[i]), fmt_num(tot[i]), mm)
    flush()
  end
  for k, p in ipairs(self.procs) do
    local name = csv_field(p.name)
    local m = per[k]
    for j = 1, #p.rss do
      local byrss = metric ~= "rss" and metric ~= "vms" and (p[metric][j] == nil or p[metric][j] ~= p[metric][j])
      buf[#buf + 1] = ("%s,%d,%s,%s,%s,%s,%s,%s,%s,%s\n"):format(fmt_num(self.t[p.i0 + j - 1]), p.pid, name,
        fmt_num(p.rss[j]), fmt_num(p.vms[j]), fmt_num(p.pss[j]), fmt_num(p.uss[j]), fmt_num(p.cpu[j]),
        fmt_num(m[j]), byrss and "rss" or metric)
      flush()
    end
  end
  write_out(f, path, "CSV", table.concat(buf))
  close_out(f, path, "CSV")
  if opts.notes_path then
    f = open_out(opts.notes_path, "notes CSV")
    buf = { "time_s,note,details,rss,vms,pss,uss,cpu_percent,memory\n" }
    for _, n in ipairs(self.notes) do
      buf[#buf + 1] = ("%s,%s,%s,%s,%s,%s,%s,%s,%s\n"):format(fmt_num(n.t), csv_field(n.note),
        n.details == nil and "" or csv_field(n.details), fmt_num(n.rss), fmt_num(n.vms),
        fmt_num(n.pss), fmt_num(n.uss), fmt_num(n.cpu), fmt_num(n.mem))
    end
    write_out(f, opts.notes_path, "notes CSV", table.concat(buf))
    close_out(f, opts.notes_path, "notes CSV")
  end
  return self
end

local function parse_csv_line(line, path)
  local out, i, n = {}, 1, #line
  while i <= n + 1 do
    if line:sub(i, i) == '"' then
      local buf, j = {}, i + 1
      while true do
        local q = line:find('"', j, true)
        if not q then
          errors.raise(errors.MonitorError, ("malformed CSV line in '%s': %s"):format(path, line), { path = path })
        end
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
  if s == nil or s == "" then return NAN end
  return math.tointeger(tonumber(s)) or tonumber(s) or NAN
end

local function open_in(path, what)
  local f, msg, code = io.open(path, "r")
  if not f then
    errors.raise(errors.OSError, ("cannot read %s file '%s': %s"):format(what, path, msg),
      { errno = code, call = "open", path = path })
  end
  return f
end

--- Read back a CSV written by to_csv (notes are not in it). Raises
-- OSError (unreadable) or MonitorError (not a monitor CSV), naming the file.
function Stats.from_csv(path)
  local f = open_in(path, "CSV")
  local header = f:read("l")
  if header ~= CSV_HEADER and header ~= OLD_CSV_HEADER then
    f:close()
    errors.raise(errors.MonitorError, ("not a coproc monitor CSV: '%s'"):format(path), { path = path })
  end
  local s = Stats.new(nil, nil, "rss")
  local index_of, by_pid = {}, {}
  for line in f:lines() do
    local r = parse_csv_line(line, path)
    if r[2] == "total" then
      local i = #s.t + 1
      s.t[i] = csv_num(r[1])
      index_of[r[1]] = i
      for k, fld in ipairs(FIELDS) do s.total[fld][i] = csv_num(r[3 + k]) end
      s.total.mem[i] = r[9] and csv_num(r[9]) or s.total.rss[i]
      local metric, n = (r[10] or "rss"):match("^(%a+)%+?r?s?s?:?(%d*)$")
      if metric then s.metric = metric end
      s.total.mem_rss[i] = tonumber(n) or 0
    else
      local pid = math.tointeger(tonumber(r[2]))
      local p = by_pid[pid]
      if not p then
        p = { pid = pid, name = r[3], i0 = index_of[r[1]] or 1, mem = {} }
        for _, fld in ipairs(FIELDS) do p[fld] = {} end
        by_pid[pid] = p
        s.procs[#s.procs + 1] = p
        if not s.pid then s.pid = pid end
      end
      for k, fld in ipairs(FIELDS) do p[fld][#p[fld] + 1] = csv_num(r[3 + k]) end
      p.mem[#p.mem + 1] = r[9] and csv_num(r[9]) or p.rss[#p.rss]
    end
  end
  f:close()
  for i = 1, #s.t do s.total.nprocs[i] = 0 end
  for _, p in ipairs(s.procs) do
    for k = 1, #p.rss do
      local i = p.i0 + k - 1
      if s.total.nprocs[i] then s.total.nprocs[i] = s.total.nprocs[i] + 1 end
    end
  end
  if #s.t > 1 then s.interval = (s.t[#s.t] - s.t[1]) / (#s.t - 1) end
  return s
end

--- JSON text of the stats (NaN as null; dkjson keeps integers and 14
-- significant digits, which times kept in microseconds need).
function Stats:json()
  local dkjson = require "dkjson"
  return dkjson.encode(self)
end

--- Write everything (samples per process and total, notes) as JSON.
-- Raises OSError naming the file.
function Stats:to_json(path)
  local f = open_out(path, "JSON")
  write_out(f, path, "JSON", self:json())
  write_out(f, path, "JSON", "\n")
  close_out(f, path, "JSON")
  return self
end

--- Read back a JSON file written by to_json (null becomes NaN).
function Stats.from_json(path)
  local f = open_in(path, "JSON")
  local text = f:read("a")
  f:close()
  local dkjson = require "dkjson"
  local v, _, err = dkjson.decode(text, 1, NAN)
  if type(v) ~= "table" or type(v.t) ~= "table" or type(v.total) ~= "table" then
    errors.raise(errors.MonitorError, ("not a coproc monitor JSON file: '%s'%s"):format(path,
      err and (": " .. err) or ""), { path = path })
  end
  v.procs, v.notes = v.procs or {}, v.notes or {}
  return Stats.wrap(v)
end

---------------------------------------------------------------------------
-- Plots
---------------------------------------------------------------------------

local MAXPTS = 1200 -- about one point per pixel column

-- At most MAXPTS points: per bucket the largest memory value (peaks matter
-- in a memory plot), at its time, and the CPU averaged over the bucket and
-- its neighbours (CPU is noisy; its mean is what a reader wants).
local function thin(xs, mem, cpu)
  local n = #mem
  if n <= MAXPTS then return xs, mem, cpu end
  local ox, om, sums, cnts, per = {}, {}, {}, {}, n / MAXPTS
  for b = 0, MAXPTS - 1 do
    local lo, hi = math.floor(b * per) + 1, math.min(n, math.floor((b + 1) * per))
    local best, sum, cnt = lo, 0, 0
    for k = lo, hi do
      if mem[k] == mem[k] and (mem[best] ~= mem[best] or mem[k] > mem[best]) then best = k end
      local c = cpu[k]
      if c == c then sum, cnt = sum + c, cnt + 1 end
    end
    ox[b + 1], om[b + 1], sums[b + 1], cnts[b + 1] = xs[best], mem[best], sum, cnt
  end
  local oc = {}
  for b = 1, MAXPTS do
    local sum, cnt = 0, 0
    for k = math.max(1, b - 2), math.min(MAXPTS, b + 2) do sum, cnt = sum + sums[k], cnt + cnts[k] end
    oc[b] = cnt > 0 and sum / cnt or NAN
  end
  return ox, om, oc
end

local PLOT_OPTS = { font_size = "any", include_notes = "any", include_cpu = "any", metric = "any",
  title = "any", width = "any", height = "any", note_details = "any", max_legend = "any" }

-- Sizes a plot can be drawn at: below MIN_PX the layout has no room for
-- the panels, past 20000 PLplot's buffers are the limit.
local MIN_PX, MAX_PX = 100, 20000

local function check_size(opts, k, lo, hi, what)
  local v = opts[k]
  if v == nil or v == false then return nil end -- false: the default (as Monitor's font_size)
  local n
  if what == "pixels" then n = options.integer(v) elseif type(v) == "number" and v == v then n = v end
  if not n or n < lo or n > hi then
    error(("bad option '%s' to 'save_memory_plot' (%s %g..%g expected, got %s)"):format(k,
      what == "pixels" and "an integer number of pixels" or "a number of points", lo, hi,
      type(v) == "number" and tostring(v) or type(v)), 4)
  end
  return n
end

--- The spec coproc.plot draws (see bindings/l_plot.c). opts: metric
-- (default the stats' metric), include_cpu (true), include_notes (true),
-- note_details (false), max_legend (processes named in the legend, 8),
-- title, font_size, width, height.
function Stats:plot_spec(opts)
  opts = options.check(opts, PLOT_OPTS, "save_memory_plot", 3)
  local metric = opts.metric or self.metric or "rss"
  if not METRICS[metric] then
    error(("bad option 'metric' to 'save_memory_plot' (rss, vms, pss or uss expected, got %s)"):format(options.show(metric)), 3)
  end
  opts.width = check_size(opts, "width", MIN_PX, MAX_PX, "pixels")
  opts.height = check_size(opts, "height", MIN_PX, MAX_PX, "pixels")
  opts.font_size = check_size(opts, "font_size", 1, 200, "points")
  local max_legend = opts.max_legend or 8
  max_legend = options.integer(max_legend) or max_legend
  if math.type(max_legend) ~= "integer" or max_legend < 0 or max_legend > 12 then
    error("bad option 'max_legend' to 'save_memory_plot' (an integer 0..12 expected)", 3)
  end
  local tot, fb, per = self:series(metric)
  local nfb = 0
  for _, v in ipairs(fb) do if v > nfb then nfb = v end end
  local M = metric:upper()
  local root_name
  for _, p in ipairs(self.procs) do if p.pid == self.pid then root_name = p.name end end
  local np = #self.procs
  local series = {}
  local tx, tm, tc = thin(self.t, tot, self.total.cpu)
  local label
  if np == 1 then
    label = ("%s (%d) %s"):format(self.procs[1].name, self.procs[1].pid, nfb > 0 and "RSS" or M)
  else
    label = ("total %s%s, %d processes"):format(M, nfb > 0 and (" (RSS for %d)"):format(nfb) or "", np)
  end
  series[1] = { label = label, x = tx, mem = tm, cpu = tc, total = true }
  if np > 1 then
    -- The largest processes are named, the others are "+k more".
    local order = {}
    for k in ipairs(self.procs) do
      local peak = 0
      for _, v in ipairs(per[k]) do if v == v and v > peak then peak = v end end
      order[#order + 1] = { k = k, peak = peak }
    end
    table.sort(order, function(a, b) if a.peak ~= b.peak then return a.peak > b.peak end return a.k < b.k end)
    for rank, o in ipairs(order) do
      local p = self.procs[o.k]
      local xs = table.move(self.t, p.i0, p.i0 + #p.rss - 1, 1, {})
      local x, m, c = thin(xs, per[o.k], p.cpu)
      series[#series + 1] = { label = rank <= max_legend and ("%s (%d)"):format(p.name, p.pid) or nil,
        x = x, mem = m, cpu = c }
    end
  end
  local notes = {}
  if opts.include_notes ~= false then
    for _, n in ipairs(self.notes) do
      if n.label ~= false then
        local text = tostring(n.note)
        if n.details ~= nil and opts.note_details then text = text .. ": " .. tostring(n.details) end
        if #text > 60 then text = text:sub(1, 57) .. "..." end
        notes[#notes + 1] = { x = n.t, text = text }
      end
    end
  end
  local title = opts.title or ("Memory and CPU of %s (pid %s)%s"):format(root_name or "process",
    tostring(self.pid), np > 1 and " and its children" or "")
  return { title = title, mem_label = M, font_size = opts.font_size, width = opts.width, height = opts.height,
    include_cpu = opts.include_cpu ~= false, series = series, notes = notes }
end

-- coproc.plot, loaded on the first plot (PLplot is mapped only then).
local function plot_module()
  local ok, mod = pcall(require, "coproc.plot")
  if not ok then
    errors.raise(errors.MonitorError, "plotting is not available (coproc.plot: " .. tostring(mod) .. ")")
  end
  return mod
end

--- Is plotting available, without loading it?
function Stats.have_plot()
  return package.loaded["coproc.plot"] ~= nil or package.searchpath("coproc.plot", package.cpath) ~= nil
end

--- The plot's layout (pixels; see docs/monitor.md) without drawing it.
function Stats:plot_layout(opts)
  local p <close> = plot_module().new(self:plot_spec(opts))
  return p:layout()
end

--- Draw memory (and CPU) over time into path (.png or .svg): see
-- plot_spec for opts. Returns self and the layout. Raises an argument error
-- for another extension, OSError for an unwritable file, MonitorError when
-- plotting is unavailable or PLplot fails.
function Stats:save_memory_plot(path, opts)
  if type(path) ~= "string" or not (path:lower():match("%.png$") or path:lower():match("%.svg$")) then
    error(("bad argument #1 to 'save_memory_plot' (a .png or .svg path expected, got %s)"):format(
      type(path) == "string" and ("'" .. path .. "'") or type(path)), 2)
  end
  local spec = self:plot_spec(opts)
  local p <close> = plot_module().new(spec)
  return self, p:draw(path)
end

return Stats
