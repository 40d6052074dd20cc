-- A script for faults_spec: a 10-item map in which item 7 ends its rank
-- (arg[1] = "exit": os.exit(3); "kill": SIGKILL), or an error in the script
-- ("error"), or a normal end ("ok": prints its arguments).
local coproc = require "coproc"
local mode = ...
if mode == "ok" then
  print("arg0=" .. arg[0], "args=" .. table.concat({ ... }, ","))
  local pool <close> = coproc.mpi.Pool()
  print("sum=" .. #pool:map(function(x) return x end, { 1, 2, 3 }))
  return
elseif mode == "error" then
  local pool <close> = coproc.mpi.Pool()
  pool:map(function(x) return x end, { 1, 2 })
  error("the script failed")
elseif mode == "osexit" then
  local pool = coproc.mpi.Pool()
  pool:map(function(x) return x end, { 1, 2 })
  os.exit(5)
elseif mode == "resource" then
  local w = coproc.mpi.WorkerResource(function(m)
    m:receive_blocking()
    os.exit(4)
  end):start()
  w.messenger:send_request("go")
  local ok, e = pcall(w.messenger.receive_blocking, w.messenger, nil, 20)
  print("resource:", ok, tostring(e))
  return
end
local pool <close> = coproc.mpi.Pool()
pool:map(function(x)
  if x == 7 then
    if mode == "exit" then os.exit(3) end
    os.execute("kill -9 " .. coproc.getpid())
  end
  local t = coproc.now() + 0.02
  while coproc.now() < t do end
  return x
end, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, { chunksize = 1 })
print("not reached")
