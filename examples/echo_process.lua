-- The seed's first WorkerResource example: EchoProcess, a class table whose
-- run() echoes what it receives, used with <close> (Python's `with`).
local coproc = require "coproc"

local EchoProcess = coproc.class { verbose = false }

function EchoProcess:run()
  while true do
    local data = self.messenger:receive_blocking() -- raises ResourceRequestedClose on close:
    if self.verbose then                           -- the runtime treats that as a clean exit
      print("EchoProcess received: " .. tostring(data))
    end
    self.messenger:send_reply(data)
    if self.verbose then print("EchoProcess sent: " .. tostring(data)) end
  end
end

local pid
do
  local worker <close> = coproc.WorkerResource(EchoProcess):start { verbose = true }
  worker.messenger:send_request("Hello, world!")
  local reply = worker.messenger:receive_blocking()
  print(reply)
  assert(reply == "Hello, world!")
  pid = worker:pid()
end                                                -- worker terminated here

-- the worker is gone and reaped
assert(io.open("/proc/" .. pid .. "/stat") == nil, "worker should be reaped")
