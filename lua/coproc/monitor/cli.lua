--- coproc.monitor.cli: `coproc-lua -m coproc.monitor [options] [--] command
-- [args...]`, psrecord's and mprof run's job for any program: run it,
-- sample its process tree until it exits, write CSV/JSON/plot, exit with
-- its status. Every option is checked before the command starts (exit 2
-- with the usage); a file that cannot be written afterwards exits 1 naming
-- it; Ctrl-C (or SIGTERM) reaches the command, which is waited for, and
-- what was collected is still written (exit 128 + signal, 130 for Ctrl-C).
local core = require "coproc.core"
local errors = require "coproc.errors"
local format = require "coproc.monitor.format"
local Stats = require "coproc.monitor.stats"

local C = core.monitor
local M = {}

local function positive(what)
  return function(s)
    local v = tonumber(s)
    if not v or v ~= v or v <= 0 or v == math.huge then
      return nil, ("%s must be a positive number, got '%s'"):format(what, s)
    end
    return v
  end
end

local function parser()
  local argparse = require "argparse"
  local p = argparse("coproc-lua -m coproc.monitor",
    "Runs command, samples the memory (PSS by default: honest for forked trees) and CPU of its " ..
    "process tree until it exits, writes the samples and a plot, and exits with its status.")
    :add_help(false)
    :epilog("Options go before the command; '--' ends them. Ctrl-C reaches the command and what " ..
      "was collected until then is written.")
  p:flag("-h --help", "Show this help and exit.")
  p:option("--interval", "Seconds between samples.", "0.25"):convert(positive("--interval"))
  p:option("--duration", "Stop after this many seconds (the command gets SIGTERM, and SIGKILL 2 s later).")
    :convert(positive("--duration"))
  p:option("--pid", "Watch this running process instead of starting a command.")
    :convert(function(s)
      local v = math.tointeger(tonumber(s))
      if not v or v <= 0 then return nil, ("--pid must be a positive integer, got '%s'"):format(s) end
      return v
    end)
  p:option("--csv", "Write the samples as CSV.")
  p:option("--json", "Write samples and notes as JSON.")
  p:option("--plot", "Draw memory and CPU over time (.png or .svg).")
  p:option("--log", "Append start and stop lines to this file.")
  p:option("--metric", "What the total and the plot count: pss, rss, uss or vms.", "pss")
    :choices { "pss", "rss", "uss", "vms" }
  p:option("--title", "Title of the plot.")
  p:option("--font-size", "Plot text size in points."):convert(positive("--font-size"))
  p:flag("--no-cpu", "Leave the CPU panel out of the plot.")
  p:flag("--no-children", "Watch the command only, not its descendants.")
  p:flag("-q --quiet", "No summary on stderr.")
  p:argument("command", "The program to run and its arguments."):args("*")
  return p
end

-- Options that take a value, to find where the command begins (argparse
-- would read the command's own options as ours).
local VALUED = { ["--interval"] = true, ["--duration"] = true, ["--pid"] = true, ["--csv"] = true,
  ["--json"] = true, ["--plot"] = true, ["--log"] = true, ["--metric"] = true, ["--title"] = true,
  ["--font-size"] = true }

local function split(args)
  local opts, i = {}, 1
  while i <= #args do
    local a = args[i]
    if a == "--" then return opts, table.move(args, i + 1, #args, 1, {}) end
    if a:sub(1, 1) ~= "-" or a == "-" then break end
    if VALUED[a] and args[i + 1] ~= nil then
      opts[#opts + 1] = a .. "=" .. args[i + 1] -- so a value like -1 is not read as an option
      i = i + 1
    else
      opts[#opts + 1] = a
    end
    i = i + 1
  end
  return opts, table.move(args, i, #args, 1, {})
end

-- Can path be written? Leaves no new empty file behind. nil, reason if not.
local function writable(path)
  local existed = io.open(path, "r")
  if existed then existed:close() end
  local f, e = io.open(path, "a")
  if not f then return nil, e end
  f:close()
  if not existed then os.remove(path) end
  return true
end

local function usage_error(p, msg)
  io.stderr:write(p:get_usage(), "\n\ncoproc.monitor: ", msg, "\n")
  return 2
end

--- Parse and check everything; returns the options table or nil, exit code.
function M.parse(args)
  local p = parser()
  local optargs, command = split(args or {})
  local ok, o = p:pparse(optargs)
  if not ok then return nil, usage_error(p, o) end
  if o.help then print(p:get_help()); return nil, 0 end
  o.command = command
  if #command == 0 and not o.pid then return nil, usage_error(p, "no command given (or --pid)") end
  if #command > 0 and o.pid then return nil, usage_error(p, "give a command or --pid, not both") end
  if o.pid and not C.exists(o.pid) then return nil, usage_error(p, ("no process with pid %d"):format(o.pid)) end
  if o.plot then
    local l = o.plot:lower()
    if not (l:match("%.png$") or l:match("%.svg$")) then
      return nil, usage_error(p, ("--plot must end in .png or .svg, got '%s'"):format(o.plot))
    end
    if not Stats.have_plot() then return nil, usage_error(p, "--plot needs coproc.plot (PLplot), which is not installed") end
  end
  for _, k in ipairs { "csv", "json", "plot", "log" } do
    if o[k] then
      if o[k] == "" then return nil, usage_error(p, ("--%s needs a file name"):format(k)) end
      local w, e = writable(o[k])
      if not w then return nil, usage_error(p, ("--%s: cannot write '%s': %s"):format(k, o[k], e)) end
    end
  end
  return o
end

local SIGNAL_NAMES = { [1] = "SIGHUP", [2] = "SIGINT", [15] = "SIGTERM" }

function M.main(args)
  local o, code = M.parse(args)
  if not o then return code end
  local Monitor = require "coproc.monitor"
  local mon_opts = { snapshot_seconds = o.interval, include_children = not o.no_children, log_path = o.log,
    metric = o.metric, pid = o.pid or core.getpid(), include_cpu = not o.no_cpu }
  local vok, verr = pcall(Monitor.new, mon_opts)
  if not vok then io.stderr:write("coproc.monitor: ", tostring(verr), "\n"); return 2 end

  -- The command, with the signals that would stop us passed on to it.
  local cmd
  if #o.command > 0 then
    local sok, c = pcall(C.spawn, o.command, { forward_signals = true })
    if not sok then io.stderr:write("coproc.monitor: ", errors.is(c) and c.message or tostring(c), "\n"); return 127 end
    cmd = c
    mon_opts.pid = cmd:pid()
  end
  local mon = Monitor.new(mon_opts)
  local sok, serr = pcall(mon.start, mon)
  if not sok then
    io.stderr:write("coproc.monitor: ", errors.is(serr) and serr.message or tostring(serr), "\n")
    if cmd then cmd:close() end
    return 1
  end

  -- Wait for the end: the command's exit, the watched pid's, or --duration.
  local exit, interrupted, watched_ended
  local deadline = o.duration and core.now() + o.duration
  local wok, werr = pcall(function()
    if cmd then
      exit = cmd:wait(o.duration)
      if exit == nil then -- --duration passed
        cmd:kill(15)
        exit = cmd:wait(2)
        if exit == nil then -- it ignores SIGTERM
          cmd:kill(9)
          exit = cmd:wait()
        end
      end
    else
      while C.exists(o.pid) and not (deadline and core.now() >= deadline) do
        mon.messenger:await_available(0.1) -- the monitor sends nothing: a plain interruptible wait
      end
      -- not our child: its exit status is not ours to know
      watched_ended = not C.exists(o.pid)
      exit = 0
    end
  end)
  if not wok then
    -- Ctrl-C while watching a --pid process (a command gets it instead).
    interrupted = tostring(werr):find("interrupted", 1, true) and 2 or nil
    if not interrupted then io.stderr:write("coproc.monitor: ", tostring(werr), "\n") end
    exit = 1
  end
  local sig = cmd and cmd:signal()
  if sig then interrupted = sig end

  -- Write what was collected, whatever stopped us.
  local stats
  local gok, gerr = pcall(function()
    stats = mon:get_stats()
    mon:stop()
  end)
  if cmd then cmd:close() end
  if not gok then
    io.stderr:write("coproc.monitor: ", errors.is(gerr) and gerr.message or tostring(gerr), "\n")
    return interrupted and 128 + interrupted or 1
  end
  local failed = false
  for _, out in ipairs {
    { o.csv, function(p) stats:to_csv(p) end },
    { o.json, function(p) stats:to_json(p) end },
    { o.plot, function(p) stats:save_memory_plot(p, { metric = o.metric, include_cpu = not o.no_cpu,
      title = o.title, font_size = o.font_size }) end },
  } do
    if out[1] then
      local ok, err = pcall(out[2], out[1])
      if not ok then
        failed = true
        local msg = errors.is(err) and err.message or tostring(err)
        if not msg:find(out[1], 1, true) then msg = ("'%s': %s"):format(out[1], msg) end
        io.stderr:write("coproc.monitor: ", msg, "\n")
      end
    end
  end
  if not o.quiet then
    local who = cmd and o.command[1] or ("pid " .. o.pid)
    local how = interrupted and ("stopped by %s"):format(SIGNAL_NAMES[interrupted] or ("signal " .. interrupted))
      or (cmd and ("exited with %d"):format(exit))
      or (watched_ended and "ended" or "still running at the end of --duration")
    -- A command that ends within a few ms is seen only as a zombie: 0 B.
    local peak = stats:peak()
    local seen = peak > 0 and ("peak %s %s"):format(stats.metric:upper(), format.bytes(peak))
      or "no memory seen (it ended before a sample could measure it)"
    io.stderr:write(("coproc.monitor: %s %s; %d samples, %d processes, %s\n"):format(who, how,
      #stats.t, #stats.procs, seen))
  end
  if interrupted then return 128 + interrupted end
  if failed then return exit ~= 0 and exit or 1 end
  return exit
end

return M
