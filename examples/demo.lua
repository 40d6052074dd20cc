-- coproc demo: stateful workers, priorities, channels, errors, many workers.
-- Run with: scripts/demo.sh   (or coproc-lua examples/demo.lua)
local coproc = require "coproc"

print(("coproc demo: %s on %d CPUs"):format(coproc._VERSION, coproc.cpu_count()))

-- 1. A stateful worker: it keeps a running total between requests.
local Accumulator = coproc.class { total = 0 }
function Accumulator:run()
  while true do
    local x = self.messenger:receive_blocking()
    self.total = self.total + x
    self.messenger:send_reply(self.total)
  end
end

do
  local acc <close> = coproc.WorkerResource(Accumulator):start { total = 100 }
  for _, x in ipairs { 1, 2, 3 } do acc.messenger:send_request(x) end
  local totals = {}
  for total in acc.messenger:receive_remaining() do totals[#totals + 1] = total end
  print("1. running totals from a stateful worker:", table.concat(totals, ", "))
end

-- 2. Priorities: the worker sees urgent work first, whatever the order sent.
do
  local w <close> = coproc.WorkerResource(function(m)
    local seen = {}
    for i = 1, 4 do seen[i] = m:receive_blocking("jobs").name end
    m:send_reply(seen, "report")
  end):start()
  w.messenger:send_request({ name = "routine" }, "jobs")                   -- priority +inf
  w.messenger:send_request({ name = "later", priority = 10 }, "jobs")
  w.messenger:send_request({ name = "urgent", priority = 1 }, "jobs")
  w.messenger:send_request({ name = "soon", priority = 5 }, "jobs")
  w.messenger:send_request("report?", "report")
  print("2. order the worker saw:", table.concat(w.messenger:receive_blocking("report"), " > "))
end

-- 3. Closures travel by value: the worker gets the function and its upvalues.
do
  local scale, offset = 3, 0.5
  local function transform(x) return x * scale + offset end
  local w <close> = coproc.WorkerResource(function(m)
    while true do m:send_reply(transform(m:receive_blocking())) end
  end):start()
  w.messenger:send_request(14)
  print("3. closure shipped to a fresh worker:", w.messenger:receive_blocking())
end

-- 4. Errors come home with the worker's traceback.
do
  local w <close> = coproc.WorkerResource(function(m)
    local x = m:receive_blocking()
    return x.field.missing
  end):start()
  w.messenger:send_request({})
  local _, err = pcall(w.messenger.receive_blocking, w.messenger)
  print("4. worker error caught:", coproc.is(err, coproc.WorkerError), tostring(err))
end

-- 5. A killed worker is reported at once, never a hang.
do
  local w <close> = coproc.WorkerResource(function(m) while true do m:receive_blocking() end end):start()
  w.messenger:send_request("you will not answer this")
  os.execute("kill -9 " .. w:pid())
  local _, err = pcall(w.messenger.receive_blocking, w.messenger)
  print("5. killed worker:", tostring(err))
end

-- 6. Many workers served by one host with coproc.wait (no polling).
do
  local n = 4
  local ws, ms = {}, {}
  for i = 1, n do
    ws[i] = coproc.WorkerResource(function(m, kw)
      while true do
        local k = m:receive_blocking()
        local s = 0
        for j = 1, k do s = s + j % kw.id end
        m:send_reply({ id = kw.id, sum = s })
      end
    end):start { id = i + 1 }
    ms[i] = ws[i].messenger
    ms[i]:send_request(200000 * i)
  end
  local results = {}
  while #results < n do
    for _, m in ipairs(coproc.wait(ms, 30)) do
      local r = m:receive_blocking()
      results[#results + 1] = ("w%d=%d"):format(r.id, r.sum)
    end
  end
  print("6. results as they came:", table.concat(results, " "))
  for _, w in ipairs(ws) do w:close() end
end

-- 7. A pool with priorities.
do
  local pool <close> = coproc.Pool(2)
  local squares = pool:map(function(x) return x * x end, { 1, 2, 3, 4, 5 })
  print("7. pool:map squares:", table.concat(squares, " "))
end

print("demo done")
