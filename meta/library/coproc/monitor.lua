---@meta coproc.monitor
-- `require "coproc.monitor"` (also coproc.Monitor): see docs/monitor.md.

---@alias coproc.Metric "pss"|"rss"|"uss"|"vms"

---@class coproc.MonitorOptions
---@field pid? integer process to watch (default: the host)
---@field snapshot_seconds? number interval between samples (0.25), > 0
---@field include_children? boolean watch all descendants too (true)
---@field metric? coproc.Metric what the total and the plots count ("pss")
---@field smaps_seconds? number each process's PSS/USS re-read at most this long ago (0.5); 0: never (RSS only)
---@field rescan_seconds? number look for new descendants this often (0.2)
---@field log_path? string file the notes are appended to
---@field fig_path? string .png or .svg plot redrawn while running and at stop
---@field save_fig_freq? integer redraw fig_path every N samples (10) ...
---@field fig_min_seconds? number ... but not more often than this (1.0)
---@field include_cpu? boolean the CPU panel of fig_path (true)
---@field font_size? number plot text size in points (11)
---@field verbose? boolean a line on stderr when the live plot is saved

---@class coproc.NoteOptions
---@field do_log? boolean write the log line (true)
---@field do_label? boolean put the note on plots (true)
---@field do_print? boolean print it with the memory to stdout (true)

---@class coproc.PlotOptions
---@field font_size? number
---@field include_notes? boolean (true)
---@field include_cpu? boolean (true)
---@field metric? coproc.Metric (the stats' metric)
---@field title? string
---@field width? integer pixels (1200)
---@field height? integer pixels (720)
---@field note_details? boolean (false)
---@field max_legend? integer processes named in the legend, 0..12 (8)

---@class coproc.CsvOptions
---@field notes_path? string the notes go to this second CSV

---A worker process that samples memory and CPU of a process tree (`<close>` stops it).
---@class coproc.Monitor
---@field opts coproc.MonitorOptions the checked options, defaults filled in
---@field messenger? coproc.Messenger
local Monitor = {}

---Start the worker and wait until it has opened the process set. Returns the monitor.
---@return coproc.Monitor
function Monitor:start() end

---A last sample, the final fig_path plot, the log closed, the worker joined. Idempotent.
---@return coproc.Monitor
function Monitor:stop() end

---Record a note with the time and the total memory at that moment. `opts` may
---also be given as positional booleans: add_note(note, details, do_log, do_label, do_print).
---@param note any
---@param details? any
---@param opts? coproc.NoteOptions|boolean
---@param do_label? boolean
---@param do_print? boolean
---@return coproc.Monitor
function Monitor:add_note(note, details, opts, do_label, do_print) end

---Only print the note (with the memory).
---@param note any
---@param details? any
---@return coproc.Monitor
function Monitor:print(note, details) end

---Only a plot label.
---@param note any
---@param details? any
---@return coproc.Monitor
function Monitor:label(note, details) end

---Only a log line.
---@param note any
---@param details? any
---@return coproc.Monitor
function Monitor:log(note, details) end

---Rescan now; returns the number of processes watched.
---@return integer
function Monitor:update_child_processes() end

---A copy of everything so far.
---@return coproc.monitor.Stats
function Monitor:get_stats() end

---smaps_rollup reads so far (what the PSS/USS figures cost).
---@return integer
function Monitor:smaps_reads() end

---get_stats() then draw in the host.
---@param path string .png or .svg
---@param opts? coproc.PlotOptions
---@return coproc.Monitor
function Monitor:save_memory_plot(path, opts) end

---@return boolean
function Monitor:is_alive() end

---@return integer?
function Monitor:worker_pid() end

---One process of the stats, identified by (pid, start time).
---@class coproc.monitor.Proc
---@field pid integer
---@field name string
---@field start number
---@field i0 integer its series starts at stats.t[i0]
---@field rss number[]
---@field vms number[]
---@field pss number[]
---@field uss number[]
---@field cpu number[]

---Samples and notes: memory in bytes, cpu in percent of one core.
---@class coproc.monitor.Stats
---@field pid integer
---@field start_time number epoch seconds
---@field interval number
---@field hz integer
---@field metric coproc.Metric
---@field t number[] seconds since start()
---@field total table rss, vms, pss, uss, cpu, nprocs, mem (the honest total) and mem_rss series
---@field procs coproc.monitor.Proc[]
---@field notes table[] { t, note, details, label, rss, vms, pss, uss, cpu }
---@field FIELDS string[] "rss", "vms", "pss", "uss", "cpu"
---@field METRICS table<coproc.Metric, true>
local Stats = {}

---Empty stats (what from_csv fills in).
---@param pid? integer
---@param interval? number
---@param metric? coproc.Metric
---@param hz? integer
---@param start_time? number
---@return coproc.monitor.Stats
function Stats.new(pid, interval, metric, hz, start_time) end

---Give a plain table (decoded stats) the Stats methods.
---@param t table
---@return coproc.monitor.Stats
function Stats.wrap(t) end

---Read a CSV written by to_csv (no notes).
---@param path string
---@return coproc.monitor.Stats
function Stats.from_csv(path) end

---Read a JSON written by to_json.
---@param path string
---@return coproc.monitor.Stats
function Stats.from_json(path) end

---Is plotting (coproc.plot) available, without loading it?
---@return boolean
function Stats.have_plot() end

---Peak of a total series in bytes (default: the honest total).
---@param field? string
---@return number
function Stats:peak(field) end

---The memory series by metric: total, processes counted by RSS at each t, per process.
---@param metric? coproc.Metric
---@return number[] total
---@return integer[] by_rss
---@return number[][] per_process
function Stats:series(metric) end

---@param path string
---@param opts? coproc.CsvOptions
---@return coproc.monitor.Stats
function Stats:to_csv(path, opts) end

---@param path string
---@return coproc.monitor.Stats
function Stats:to_json(path) end

---The JSON text of the stats (what to_json writes).
---@return string
function Stats:json() end

---Draw memory (and CPU) over time into a .png or .svg; returns the stats and the layout.
---@param path string
---@param opts? coproc.PlotOptions
---@return coproc.monitor.Stats
---@return table layout
function Stats:save_memory_plot(path, opts) end

---The layout (pixels) without drawing.
---@param opts? coproc.PlotOptions
---@return table
function Stats:plot_layout(opts) end

---What is handed to coproc.plot.
---@param opts? coproc.PlotOptions
---@return coproc.PlotSpec
function Stats:plot_spec(opts) end

---The module; calling it (`coproc.Monitor{...}`) is `new`.
---@class coproc.monitor
---@field DEFAULTS coproc.MonitorOptions the defaults of the options
---@field FIELDS string[]
---@field Stats coproc.monitor.Stats
---@field MonitorClass coproc.Monitor the method table of monitors
---@field Monitor coproc.monitor the module itself (callable)
---@overload fun(opts?: coproc.MonitorOptions): coproc.Monitor
local monitor = {}

---A monitor, not yet running (checks the options; MonitorError for a pid that does not exist).
---@param opts? coproc.MonitorOptions
---@return coproc.Monitor
function monitor.new(opts) end

---Readable size: "45.6 MiB".
---@param bytes number
---@return string
function monitor.human_bytes(bytes) end

---The command line (`coproc-lua -m coproc.monitor ...`); returns the exit status.
---@param args string[]
---@return integer
function monitor.main(args) end

return monitor
