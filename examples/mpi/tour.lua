-- examples/mpi/tour.lua: the first example of docs/mpi.md, run by ctest as
--   mpirun -n 3 coproc-lua -m coproc.mpi examples/mpi/tour.lua
local coproc = require "coproc"

local pool <close> = coproc.mpi.Pool()            -- every free serving rank
local k = 10
print(table.concat(pool:map(function(x) return x * k end, { 1, 2, 3 }), " "))  --> 10 20 30
for i, r in pool:imap(function(x) return x * x end, { 4, 5 }) do print(i, r) end
print(pool:submit(string.rep, { "ab", 2 }, { priority = -1 }):result())       --> abab
pool:terminate()                                   -- gives the ranks back

local Counter = coproc.class { n = 0 }
function Counter:run()
  while true do
    self.n = self.n + self.messenger:receive_blocking("add")
    self.messenger:send_reply(self.n, "add")
  end
end
local w <close> = coproc.mpi.WorkerResource(Counter):start { n = 100 }
w.messenger:send_request(5, "add")
print(w:describe(), w.messenger:receive_blocking("add"))  --> rank 1 (pid ... on node1)  105
