-- The seed's second example: a custom object that holds a WorkerResource
-- and calls start/terminate itself instead of relying on <close> of the
-- resource.
local coproc = require "coproc"

local EchoProcess = coproc.class { verbose = false }
function EchoProcess:run()
  while true do
    local data = self.messenger:receive_blocking()
    if self.verbose then print("EchoProcess received: " .. tostring(data)) end
    self.messenger:send_reply(data)
  end
end

local EchoResource = {}
EchoResource.__index = EchoResource

function EchoResource.new(opts)
  return setmetatable({
    verbose = opts and opts.verbose or false,
    resource = coproc.WorkerResource(EchoProcess),
  }, EchoResource)
end

function EchoResource:enter()                 -- Python's __enter__
  self.resource:start { verbose = self.verbose }
  return self
end

function EchoResource:__close()               -- Python's __exit__
  self.resource:terminate()
end

function EchoResource:apply(data)
  self:messenger():send_request(data)
  return self:messenger():receive_blocking()
end

function EchoResource:messenger()
  return self.resource.messenger
end

do
  local w <close> = EchoResource.new { verbose = true }:enter()
  local reply = w:apply("Hello, world!")
  print(reply)
  assert(reply == "Hello, world!")
end
