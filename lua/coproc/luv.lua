--- coproc.luv: messengers and pools inside a luv (libuv) loop. A thin
-- layer over the pollable contract of docs/eventloops.md:
--
--   on_message(m, fn, opts)  fn(nil, data, message) for every message of a
--                            channel as it arrives, fn(err) once when the
--                            connection ends (then the handle stops)
--   drive(pool)              the pool makes progress while the loop runs:
--                            futures complete, done callbacks run
--
-- One uv poll handle per messenger, shared by everything watching it, on an
-- epoll fd that stands for the messenger's socket (core._pollproxy: libuv
-- would report a dead worker's socket error as EBADF, and luv print it). A prepare handle runs before the loop blocks:
-- it writes what is corked (nothing stays corked while the loop sleeps),
-- adds "w" to a poll while output waits for room, and starts an idle
-- handle (so the loop does not block) when a watched messenger already has
-- messages queued: a wait on another messenger may have read them, and
-- its socket is quiet then. A check handle, after each round of callbacks,
-- follows the pools' workers (replaced when they die) and keeps the loop
-- alive while a driven pool has unfinished work. coproc does not depend on
-- luv; this module needs it.
local uv = require "luv"
local core = require "coproc.core"

local M = {}

local watchers = {}   -- messenger -> watcher {m, poll, events, subs = list, pools = set}
local hooked = setmetatable({}, { __mode = "k" })  -- messengers with our close hook
local order = {}      -- the watchers, in the order they were made
local drives = {}     -- the active drive handles
local prepare, check, idle

local function remove_from(list, x)
  for i = #list, 1, -1 do
    if list[i] == x then table.remove(list, i) return end
  end
end

-- Reading what has arrived for every subscription of w, then the pools
-- that have a worker on w.
local deliver, pump_drive, sync

local function dispatch(w)
  for _, sub in ipairs({ table.unpack(w.subs) }) do
    if sub.active then deliver(sub) end
  end
  for d in pairs(w.pools) do
    if d.active then pump_drive(d) end
  end
end

-- Something a watcher's owners would act on without the socket saying so.
local function ready_now(w)
  local m = w.m
  if m:is_closed() then return false end
  for _, sub in ipairs(w.subs) do
    if m:pending(sub.channel) then return true end
  end
  return next(w.pools) ~= nil and m:timeout() == 0
end

local function wanted(w)
  if w.subs[1] then return true end
  for d in pairs(w.pools) do
    if d.pool:unfinished() > 0 then return true end
  end
  return false
end

-- A poll is stopped at once (its fd may be reused right after) and closed
-- from the next prepare: luv 1.44 crashes at exit on a handle closed
-- outside the loop and never run again, and a close from inside the loop
-- is done within that round.
local to_close = {}

local function close_watcher(w)
  watchers[w.m] = nil
  remove_from(order, w)
  w.poll:stop()
  to_close[#to_close + 1] = w
end

-- The watcher is kept while something uses it, referenced (keeping the
-- loop alive) while that something expects messages.
local function settle(w)
  if not w.subs[1] and not next(w.pools) then return close_watcher(w) end
  if wanted(w) then w.poll:ref() else w.poll:unref() end
end

local function on_prepare()
  if to_close[1] then
    for _, w in ipairs(to_close) do
      -- the proxy's fd once libuv is done with it
      if not w.poll:is_closing() then w.poll:close(function() core._pollproxy_close(w.pfd) end) end
    end
    to_close = {}
  end
  core.flush_all()
  local busy = false
  for _, w in ipairs({ table.unpack(order) }) do
    local m = w.m
    if m:is_closed() then
      close_watcher(w)
    else
      local ev = m:unsent() > 0 and "rw" or "r"
      if ev ~= w.events then
        w.events = ev
        core._pollproxy_set(w.pfd, w.fd, ev)
      end
      if not busy and ready_now(w) then busy = true end
    end
  end
  if busy then idle:start(M._on_idle) else idle:stop() end
end

function M._on_idle()
  idle:stop()
  for _, w in ipairs({ table.unpack(order) }) do
    if not w.m:is_closed() and ready_now(w) then dispatch(w) end
  end
end

local function on_check()
  for _, d in ipairs({ table.unpack(drives) }) do sync(d) end
end

local function setup()
  if prepare then return end
  prepare, check, idle = uv.new_prepare(), uv.new_check(), uv.new_idle()
  prepare:start(on_prepare)
  check:start(on_check)
  prepare:unref()
  check:unref()
  idle:unref()
end

-- Closing a messenger closes its poll first: its fd number may be reused
-- at once, and a poll still on it would watch another file.
local function on_close(m)
  local w = watchers[m]
  if not w then return end
  for _, sub in ipairs(w.subs) do sub.active = false end
  w.subs = {}
  close_watcher(w)
end

local function watcher(m)
  local w = watchers[m]
  if w then return w end
  setup()
  if not hooked[m] then
    hooked[m] = true
    core.on_close(m, on_close)
  end
  -- libuv polls an epoll fd that stands for the socket (core._pollproxy):
  -- polled directly, a socket's error (a worker that died with data
  -- unread) reaches the callback as UV_EBADF, which luv prints.
  local fd = m:fileno()
  local pfd = core._pollproxy(fd, "r")
  local poll, err = uv.new_poll(pfd)
  if not poll then
    core._pollproxy_close(pfd)
    error("coproc.luv: cannot poll the messenger's socket: " .. tostring(err), 3)
  end
  w = { m = m, fd = fd, pfd = pfd, poll = poll, events = "r", subs = {}, pools = {} }
  w.cb = function() dispatch(w) end
  poll:start("r", w.cb)
  watchers[m] = w
  order[#order + 1] = w
  return w
end

---------------------------------------------------------------- on_message

local Sub = {}
Sub.__index = Sub
Sub.__name = "coproc.luv.Subscription"

local function stop_sub(sub)
  if not sub.active then return end
  sub.active = false
  local w = sub.w
  remove_from(w.subs, sub)
  if watchers[w.m] == w then settle(w) end
end

-- One message at a time, so that a callback that stops the handle leaves
-- the rest queued.
function deliver(sub)
  local m = sub.w.m
  local ok, err = pcall(m.available, m, sub.channel)   -- read the socket
  if not ok then
    stop_sub(sub)
    return sub.fn(err)
  end
  while sub.active and m:pending(sub.channel) do
    local got, msg = pcall(m.receive_message_blocking, m, sub.channel, 0)
    if not got then
      stop_sub(sub)
      return sub.fn(msg)
    end
    sub.fn(nil, msg.data, msg)
  end
end

local SUB_OPTIONS = { channel = true }

--- on_message(m, fn, {channel = ch}) -> handle. fn(nil, data, message) runs
-- in the loop for each message of the channel (default: the default
-- channel), in the order a receive would give them; message is the table
-- of m:receive_message_blocking (data, channel, is_request, is_reply,
-- priority). When the connection ends, a close request or the other side's
-- error arrives, fn(err) runs once with the coproc error and the handle
-- stops. handle:stop() ends it; while active it keeps the loop alive.
function M.on_message(m, fn, opts)
  if type(m) ~= "userdata" or type(m.fileno) ~= "function" then
    error(("bad argument #1 to 'on_message' (coproc.Messenger expected, got %s)"):format(type(m)), 2)
  end
  if type(fn) ~= "function" then
    error(("bad argument #2 to 'on_message' (function expected, got %s)"):format(type(fn)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("bad argument #3 to 'on_message' (options table expected, got %s)"):format(type(opts)), 2)
  end
  for k in pairs(opts or {}) do
    if not SUB_OPTIONS[k] then error(("bad option '%s' to 'on_message'"):format(tostring(k)), 2) end
  end
  local channel = opts and opts.channel
  m:queue_size(channel)   -- a bad channel is an argument error here, not in the loop
  local w = watcher(m)
  local sub = setmetatable({ w = w, fn = fn, channel = channel, active = true }, Sub)
  w.subs[#w.subs + 1] = sub
  settle(w)
  return sub
end

function Sub:stop() stop_sub(self) end
function Sub:is_active() return self.active end
function Sub:__tostring()
  return ("coproc.luv.Subscription(%s)"):format(self.active and "active" or "stopped")
end

---------------------------------------------------------------- drive

local Drive = {}
Drive.__index = Drive
Drive.__name = "coproc.luv.Drive"

-- Follow the pool's current workers: a watcher for each, none for those
-- gone; referenced while the pool has unfinished work.
function sync(d)
  if not d.active then return end
  local pool = d.pool
  if pool.state == "terminated" then return d:stop() end
  local now = {}
  for _, m in ipairs(pool:messengers()) do now[m] = true end
  for m, w in pairs(d.ms) do   -- the workers gone first: their polls close before new ones open
    if not now[m] then
      d.ms[m] = nil
      w.pools[d] = nil
      if watchers[m] == w then settle(w) end
    end
  end
  for m in pairs(now) do
    if not d.ms[m] then
      local w = watcher(m)
      w.pools[d] = true
      d.ms[m] = w
    end
  end
  for m, w in pairs(d.ms) do
    if watchers[m] == w then settle(w) end
  end
end

function pump_drive(d)
  -- A done callback's error ends the loop, as any error in a luv callback
  -- does; luv prints only string errors ("Uncaught Error: (null)" for an
  -- error object), so it goes as its message and traceback.
  local ok, err = pcall(d.pool.pump, d.pool, 0)
  if not ok then
    if type(err) ~= "string" then
      local tb = type(err) == "table" and rawget(err, "traceback")
      err = tostring(err) .. (type(tb) == "string" and tb ~= "" and ("\n" .. tb) or "")
    end
    error(err, 0)
  end
  sync(d)
end

--- drive(pool) -> handle: while the loop runs, the pool sends its work,
-- takes its workers' replies, replaces dead workers and runs done
-- callbacks (futures complete without a pool call waiting for them). The
-- loop is kept alive while the pool has unfinished work. handle:stop() ends it.
function M.drive(pool)
  if type(pool) ~= "table" or type(pool.pump) ~= "function" or type(pool.messengers) ~= "function" then
    error(("bad argument #1 to 'drive' (coproc.Pool expected, got %s)"):format(type(pool)), 2)
  end
  if pool._on_work then error("bad argument #1 to 'drive' (this pool is driven already)", 2) end
  setup()
  local d = setmetatable({ pool = pool, ms = {}, active = true }, Drive)
  drives[#drives + 1] = d
  -- work added outside the loop (before uv.run) must keep it alive too
  pool._on_work = function() sync(d) end
  sync(d)
  return d
end

function Drive:stop()
  if not self.active then return end
  self.active = false
  remove_from(drives, self)
  self.pool._on_work = nil
  for m, w in pairs(self.ms) do
    w.pools[self] = nil
    if watchers[m] == w then settle(w) end
  end
  self.ms = {}
end

function Drive:is_active() return self.active end
function Drive:__tostring()
  return ("coproc.luv.Drive(%s)"):format(self.active and "active" or "stopped")
end

return M
