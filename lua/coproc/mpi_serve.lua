--- coproc.mpi_serve: what the serving ranks (1 .. n-1) of a job started with
-- `coproc-lua -m coproc.mpi` run. Internal; docs/mpi.md has the picture.
--
-- A serving rank talks to rank 0 over its control link (tag 2, a messenger
-- over MPI like any other). Rank 0 sends:
--
--   {"start", tag, payload, arrival_order}
--       run one worker in this rank: a fresh Lua state (mpi_core.run_fresh)
--       whose messenger is the link (0, tag); payload is what a "fresh"
--       local worker gets, core.encode{target, kwargs}. Blocks the control
--       loop until the worker returns; then {"ended", tag, code}.
--   {"slot", tag, payload, arrival_order}
--       hybrid pools (per_rank): start a local worker process (a coproc
--       WorkerResource with the pool's shared status page) and relay the
--       link (0, tag) to and from it, frames as they are (core.forward).
--       When it ends: {"ended", tag, code, signal, bid, item}, bid and item
--       from its status page (the batch item it died in), then the link is
--       closed. Several slots run at once.
--   {"exit"}
--       leave: close everything, MPI_Finalize (the caller does).
--
-- and gets {"hello", rank, pid, processor_name} first, so it knows where
-- every rank runs.
local core = require "coproc.core"
local mpi = require "coproc.mpi_core"

local M = {}

M.CTL_TAG = 2
local IDLE_SLEEP = 0.01       -- seconds an idle rank sleeps between looks at MPI, at most
local RELAY_UNSENT = 1 << 20   -- bytes a relay leaves unwritten on one side before it stops moving

local function is_close(e)
  local mt = getmetatable(e)
  return type(e) == "table" and mt and rawget(mt, "__name") == "coproc.Error"
    and type(e.class) == "table" and e.class.name == "ResourceRequestedClose"
end

--- In the fresh Lua state of a worker (mpi_core.run_fresh): run it as a
-- "fresh" local worker is run. os.exit first tells rank 0 (exit status and
-- the batch item being run) and says on stderr that the job will end:
-- with Open MPI a rank that ends ends the whole job.
function M.run_worker(m, payload)
  local real_exit = os.exit
  local rank = mpi.init()
  os.exit = function(code, close)   -- luacheck: ignore 122
    local status = code
    if code == nil or code == true then status = 0 elseif code == false then status = 1 end
    status = math.tointeger(status) or 1
    local item, bid = core.batch_item()
    io.stderr:write(("coproc.mpi: rank %d (pid %d on %s) called os.exit(%d)%s; "
      .. "with MPI this ends the whole job\n"):format(rank, core.getpid(), mpi.processor_name(), status,
      item > 0 and " in a pool task" or ""))
    io.stderr:flush()
    mpi.send_notice(status, bid, item, 2)
    pcall(m.close, m)        -- EOF on the link, after the notice
    mpi.quiesce(1)
    return real_exit(code, close)
  end
  return require("coproc.worker").main_fresh(m, payload)
end

---------------------------------------------------------------- hybrid slots

local function start_slot(ctl, slots, tag, payload, arrival)
  local link = mpi.link(0, tag, false, arrival)
  local ok, t = pcall(core.decode, payload)
  local res, err
  if ok then
    local coproc = require "coproc"
    ok, res = pcall(function()
      return coproc.WorkerResource(t[1], { _status = true,
        messenger_type = arrival and coproc.MultiMessenger or nil }):start(t[2])
    end)
  end
  if not ok then
    err = res or t
    pcall(link.send_error, link, { message = "coproc.mpi: cannot start a local worker: " .. tostring(err) })
    link:close()
    pcall(ctl.send_norequest, ctl, { "ended", tag, 1, false, 0, 0 })
    return nil, err
  end
  slots[tag] = { link = link, res = res, m = res.messenger }
  pcall(ctl.send_norequest, ctl, { "started", tag, res:pid() })
  return true
end

-- The slot's local worker ended (or the host closed the link): report it
-- and drop the slot.
local function end_slot(ctl, slots, tag, s)
  local res = s.res
  local bid, item = res:_status()
  pcall(res.join, res, 1)
  res:close(0.5)
  local code, signal = res:exitcode()
  pcall(ctl.send_norequest, ctl, { "ended", tag, code or false, signal or false, bid or 0, item or 0,
    res:pid() })
  pcall(core.forward, s.link, s.m)   -- what it sent before dying
  s.link:close()
  slots[tag] = nil
end

-- One round of relaying: wait for any of the control link, the links and
-- the local workers, move frames both ways, retire the slots that ended.
-- Returns the control messages that arrived.
local function relay_round(ctl, slots)
  -- Wait for any messenger that has something to move; one whose far side
  -- still holds RELAY_UNSENT bytes unwritten waits for that side instead,
  -- which no messenger's readiness shows: then look again in a millisecond.
  local ms, blocked = { ctl }, false
  for _, s in pairs(slots) do
    for _, pair in ipairs { { s.link, s.m }, { s.m, s.link } } do
      local src, dst = pair[1], pair[2]
      if src:queue_size() > 0 and dst:is_connected() and dst:unsent() >= RELAY_UNSENT then
        blocked = true
      else
        ms[#ms + 1] = src
      end
    end
  end
  core.wait(ms, blocked and 0.001 or nil)
  for tag, s in pairs(slots) do
    if s.m:is_connected() or s.m:queue_size() > 0 then core.forward(s.link, s.m, RELAY_UNSENT) end
    if s.link:is_connected() or s.link:queue_size() > 0 then
      if s.m:is_connected() then core.forward(s.m, s.link, RELAY_UNSENT) end
    end
    if not s.m:is_connected() and s.m:queue_size() == 0 then
      end_slot(ctl, slots, tag, s)
    elseif not s.link:is_connected() and s.link:queue_size() == 0 then
      -- rank 0 closed the link: stop the worker (close request, then signals)
      end_slot(ctl, slots, tag, s)
    end
  end
  local ok, msgs = pcall(ctl.receive_available, ctl)
  if not ok then
    if is_close(msgs) then return { { "exit" } } end
    error(msgs, 0)
  end
  return msgs
end

---------------------------------------------------------------- the loop

--- The serving rank's loop; returns the exit status for the rank.
function M.serve(rank)
  local ctl = mpi.link(0, M.CTL_TAG, false, false)
  ctl:send_norequest({ "hello", rank, core.getpid(), mpi.processor_name() })
  local slots = {}
  while true do
    local msgs
    if next(slots) == nil then
      -- Idle: nothing but a start or the end can come; wake less often.
      mpi.set_max_sleep(IDLE_SLEEP)
      local ok, msg = pcall(ctl.receive_blocking, ctl)
      mpi.set_max_sleep()
      if not ok then
        if is_close(msg) then msgs = { { "exit" } } else error(msg, 0) end
      else
        msgs = { msg }
      end
    else
      msgs = relay_round(ctl, slots)
    end
    for _, msg in ipairs(msgs) do
      local op = msg[1]
      if op == "start" then
        local code = mpi.run_fresh(0, msg[2], msg[3], package.path, package.cpath, msg[4])
        ctl:send_norequest({ "ended", msg[2], code })
      elseif op == "slot" then
        start_slot(ctl, slots, msg[2], msg[3], msg[4])
      elseif op == "exit" then
        for tag, s in pairs(slots) do
          s.res:close(0.5)
          s.link:close()
          slots[tag] = nil
        end
        pcall(ctl.flush, ctl, 2)
        ctl:close()
        return 0
      end
    end
  end
end

return M
