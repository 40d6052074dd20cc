--- coproc.monitor.format: the readable forms the monitor prints and logs
-- (sizes, wall-clock times, note lines). Shared by the host, the worker
-- and the command line.
local M = {}

--- 1536 --> "1.5 KiB"; NaN or nil --> "?".
function M.bytes(b)
  if b == nil or b == false or b ~= b then return "?" end
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while b >= 1024 and i < #units do b = b / 1024; i = i + 1 end
  return i == 1 and ("%d B"):format(b) or ("%.1f %s"):format(b, units[i])
end

--- Epoch seconds --> "2024-05-01 12:00:00.250".
function M.wall(t)
  return os.date("%Y-%m-%d %H:%M:%S", math.floor(t)) .. (".%03d"):format(math.floor((t % 1) * 1000))
end

local LINE_BREAKS = { ["\n"] = "\\n", ["\r"] = "\\r" }

--- One readable line for a note (log file): wall time, offset, memory, CPU, text.
function M.note_line(n, wall0)
  local mem = ("RSS %s"):format(M.bytes(n.rss))
  if n.pss == n.pss then mem = mem .. ("  PSS %s"):format(M.bytes(n.pss)) end
  if n.uss == n.uss then mem = mem .. ("  USS %s"):format(M.bytes(n.uss)) end
  local text = tostring(n.note)
  if n.details ~= nil then text = text .. ": " .. tostring(n.details) end
  text = text:gsub("[\r\n]", LINE_BREAKS) -- one line per note, whatever it holds
  return ("%s  +%.3fs  %s  CPU %.0f%%  | %s"):format(M.wall(wall0 + n.t), n.t, mem, n.cpu or 0, text)
end

--- Round to microseconds: times and percentages are kept this way, so the
-- 14 significant digits of a JSON number (dkjson) give them back exactly.
function M.micro(x)
  return math.floor(x * 1e6 + 0.5) / 1e6
end

return M
