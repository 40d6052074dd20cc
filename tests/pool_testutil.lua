--- Helpers for the pool specs (on LUA_PATH as tests/?.lua): a module whose
-- functions pool workers can require by name, a FIFO gate that holds a
-- worker inside a task until the test opens it, and process checks.
local M = {}

function M.square(x) return x * x end
function M.add(a, b) return a + b end
M.nested = { twice = function(x) return 2 * x end }

--- A gate: gate.wait (a function to ship to a worker) blocks in the worker
-- until the host calls gate:open(). A named pipe, opened read-write on both
-- sides so neither open blocks and the line written stays buffered while the
-- host holds its end.
function M.gate()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkfifo " .. path), "mkfifo failed")
  local host = assert(io.open(path, "r+"))
  local g = { path = path }
  g.wait = function(...)
    local f = assert(io.open(path, "r+"))
    local line = f:read("l")
    f:close()
    return line, ...
  end
  function g.open()
    host:write("go\n")
    host:flush()
  end
  function g.close()
    host:close()
    os.remove(path)
  end
  return g
end

--- Burn about `ms` milliseconds of worker CPU (shipped to workers).
function M.spin(ms)
  local t = os.clock() + ms / 1000
  local n = 0
  while os.clock() < t do n = n + 1 end
  return n
end

--- States of the children of pid (list of single letters), via ps (which
-- is itself a child, and left out).
function M.child_states(pid)
  local p = assert(io.popen("ps -o stat=,comm= --ppid " .. pid))
  local out = {}
  for line in p:lines() do
    local st, comm = line:match("^%s*(%S)%S*%s+(%S+)")
    if st and comm ~= "ps" and comm ~= "sh" then out[#out + 1] = st end
  end
  p:close()
  return out
end

function M.zombies(pid)
  local n = 0
  for _, s in ipairs(M.child_states(pid)) do if s == "Z" then n = n + 1 end end
  return n
end

function M.pid_exists(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local st = f:read("a"):match("%) (%a)")
  f:close()
  return st ~= "Z" and st ~= "X"
end

--- Spin until pid is gone or a zombie (after a kill -9, which lands
-- asynchronously); raises if that takes absurdly long.
function M.wait_dead(pid)
  for _ = 1, 1e7 do
    if not M.pid_exists(pid) then return end
  end
  error("process " .. pid .. " is still alive")
end

--- Poll cond() until it is true; raises after `seconds` (default 20) so a
-- test that waits on a state it never reaches fails instead of hanging.
function M.until_true(cond, seconds)
  local now = require("coproc.core").now
  local deadline = now() + (seconds or 20)
  while not cond() do
    if now() > deadline then error("condition not reached in time", 2) end
  end
end

--- The whole file, or raises.
function M.slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- A Lua file with src in it; returns its path.
function M.write_script(src)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  return path
end

--- Run src with coproc-lua ($COPROC_LUA), after shell_prefix (e.g. "ulimit
-- -n 40; "); returns its output (stdout and stderr) and exit status.
function M.run_script(src, shell_prefix)
  local path = M.write_script(src)
  local p = assert(io.popen((shell_prefix or "") .. "'" .. os.getenv("COPROC_LUA") .. "' " .. path .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  os.remove(path)
  return out, ok and 0 or code
end

--- Hang guard for what happens in another process: true once pred() is,
-- polling every 10 ms for at most seconds (20); pred()'s last answer then.
--- The order in which a one-worker pool (prefetch = 1) runs ten tasks of
-- mixed priorities submitted while its worker is held by a gate: returns
-- the task indices in the order they ran, and the order the contract asks
-- for (lower priority first, FIFO among equals).
function M.priority_order(pool)
  local gate = M.gate()
  local hold = pool:submit(gate.wait)
  local function stamp()
    _G.stamp = (_G.stamp or 0) + 1
    return _G.stamp
  end
  local prios = { 5, 1, 3, 1, 0, 4, 2, 0, 5, -1 }
  local futs = {}
  for i, p in ipairs(prios) do futs[i] = pool:submit(stamp, { i }, { priority = p }) end
  gate.open()
  hold:result(30)
  local order = {}
  for i = 1, #prios do order[futs[i]:result(30)] = i end
  gate.close()
  local expect = M.range(#prios)
  table.sort(expect, function(a, b) return prios[a] < prios[b] or (prios[a] == prios[b] and a < b) end)
  local seen = {}
  for k = 1, #prios do seen[k] = order[k] end
  return seen, expect
end

function M.eventually(pred, seconds)
  local coproc = require "coproc"
  local deadline = coproc.now() + (seconds or 20)
  while coproc.now() < deadline do
    if pred() then return true end
    coproc.sleep(0.01)
  end
  return pred()
end

function M.range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

return M
