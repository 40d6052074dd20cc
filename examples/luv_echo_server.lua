-- examples/luv_echo_server.lua: a luv (libuv) TCP server that hands each
-- request to a coproc Pool and answers when its future completes, while
-- the loop goes on serving. A client in the same loop sends a few lines,
-- checks the answers and stops everything, so the example ends by itself.
-- Protocol: the client sends "<id> <text>\n", the server answers
-- "<id> <TEXT> (worker <pid>)\n"; answers may come in any order.
-- Run: coproc-lua examples/luv_echo_server.lua   (needs lua-luv)
local coproc = require "coproc"
local has_luv, uv = pcall(require, "luv")
if not has_luv then
  print("luv_echo_server: lua-luv is not installed; nothing to show")
  return
end
local cluv = require "coproc.luv"

local pool = coproc.Pool(2)
local drive = cluv.drive(pool)   -- futures complete while uv.run() runs

-- What a worker does with a request (any Lua function: it is sent by value).
local function work(text)
  local coproc_ = require "coproc"
  coproc_.sleep(0.01 * #text)           -- some work that takes a while
  return ("%s (worker %d)"):format(text:upper(), coproc_.getpid())
end

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", 0))
assert(server:listen(16, function(err)
  assert(not err, err)
  local client = uv.new_tcp()
  server:accept(client)
  local buf = ""
  client:read_start(function(rerr, chunk)
    if rerr or not chunk then client:close() return end
    buf = buf .. chunk
    for id, text in buf:gmatch("(%d+) ([^\n]*)\n") do
      pool:submit(work, { text }):add_done_callback(function(f)
        if not client:is_closing() then client:write(id .. " " .. f:result() .. "\n") end
      end)
    end
    buf = buf:match("[^\n]*$")
  end)
end))
local port = server:getsockname().port
print(("serving on 127.0.0.1:%d with %d workers"):format(port, #pool:pids()))

-- The client: sends every line at once, collects the answers by id.
local lines = { "hello", "event loops", "coproc", "a longer line takes longer", "luv" }
local answers, finished = {}, false
local conn = uv.new_tcp()
conn:connect("127.0.0.1", port, function(err)
  assert(not err, err)
  local buf = ""
  conn:read_start(function(rerr, chunk)
    assert(not rerr, rerr)
    buf = buf .. (chunk or "")
    for id, text in buf:gmatch("(%d+) ([^\n]*)\n") do
      answers[tonumber(id)] = text
      print("answer " .. id .. ": " .. text)
    end
    buf = buf:match("[^\n]*$")
    local n = 0
    for _ in pairs(answers) do n = n + 1 end
    if n == #lines or not chunk then
      finished = true
      conn:close()
      server:close()
      drive:stop()
    end
  end)
  for id, text in ipairs(lines) do conn:write(id .. " " .. text .. "\n") end
end)

-- A guard, so that a bug cannot hang CI: the loop stops after 30 s.
local guard = uv.new_timer()
guard:start(30000, 0, function() uv.stop() end)
guard:unref()

uv.run()
guard:close()
uv.run("nowait")
pool:close()
pool:join()

assert(finished, "the client did not get its answers within 30 s")
for id, text in ipairs(lines) do
  local want = text:upper() .. " (worker "
  assert(answers[id] and answers[id]:sub(1, #want) == want, ("answer %d: %s"):format(id, tostring(answers[id])))
end
print("all " .. #lines .. " answers right")
