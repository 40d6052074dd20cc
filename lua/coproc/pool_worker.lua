--- coproc.pool_worker: the loop each Pool / LazyPool worker runs.
--
-- Runs in the worker process. The host (lua/coproc/pool.lua) sends, on the
-- default channel of the worker's messenger:
--
--   {"f", fid, fn}                  define function fid (fn: a function value
--                                   or a "module.function" name); sent with
--                                   the lowest priority number so it is popped
--                                   before any batch that uses it
--   {"d", fid}                      forget function fid
--   {"t", bid, fid, star, n, a1..an} run fn(a_j) for j = 1..n (fn(unpack(a_j))
--                                   when star), as one batch
--   {"r", bid, lo, n}               LazyPool: run the inherited fn on the
--                                   inherited items lo .. lo+n-1
--
-- and gets one reply per batch: {bid, seconds, nok, err, r1..r_nok} where nok
-- items ran without error (their first results follow) and err is false or
-- {message=, traceback=} for item nok+1, at which the batch stopped. seconds
-- is the worker's CPU time for the batch: the host's cost estimate, which
-- sizes batches and in-flight windows.
--
-- Everything is caught here with xpcall, so a failing fn never kills the
-- worker. A close request from the host raises ResourceRequestedClose out of
-- receive_blocking, which ends the worker cleanly.
local M = {}

local traceback, unpack = debug.traceback, table.unpack
local clock = os.clock

--- Find a function by name: "mod.fn", "mod.sub.fn" (longest requirable
-- module prefix wins), or a global path like "string.format" / "print".
function M.resolve(name)
  if type(name) ~= "string" then return name end
  local parts = {}
  for p in name:gmatch("[^.]+") do parts[#parts + 1] = p end
  if #parts == 0 then error("empty function name", 0) end
  local function walk(v, from)
    for i = from, #parts do
      if type(v) ~= "table" then return nil end
      v = v[parts[i]]
    end
    return v
  end
  local v
  for cut = #parts - 1, 1, -1 do
    local modname = table.concat(parts, ".", 1, cut)
    local ok, mod = pcall(require, modname)
    if ok then v = walk(mod, cut + 1); break end
  end
  if v == nil then v = walk(_G, 1) end
  if type(v) ~= "function" and not (type(v) == "table" and (getmetatable(v) or {}).__call) then
    error(("cannot resolve function name '%s' in the worker"):format(name), 0)
  end
  return v
end

local function err_handler(e)
  local msg = type(e) == "string" and e or tostring(e)
  return { message = msg, traceback = traceback(msg, 2) }
end

--- The worker loop. kw: initializer, initargs. lazy: {fn=, items=, star=}
-- (LazyPool, inherited by fork, never sent).
function M.run(m, kw, lazy)
  kw = kw or {}
  local fns = {}          -- fid -> function, or {err} when it failed to resolve
  local init_err = false  -- once set, every task fails with it (pool stays sane)

  if kw.initializer ~= nil then
    local args = kw.initargs or {}
    local ok, e = xpcall(function()
      M.resolve(kw.initializer)(unpack(args, 1, args.n or #args))
    end, err_handler)
    if not ok then
      init_err = { message = "initializer failed: " .. e.message, traceback = e.traceback }
    end
  end

  local lazy_fn, lazy_err
  if lazy then
    local ok, f = pcall(M.resolve, lazy.fn)
    if ok then lazy_fn = f else lazy_err = { message = tostring(f), traceback = tostring(f) } end
  end

  -- One batch, under one xpcall: cheap per item; i tells where it stopped.
  local i, reply
  local function run_args(f, msg, n, star)
    if star then
      for j = 1, n do
        local a = msg[5 + j]
        i = j; reply[4 + j] = f(unpack(a, 1, a.n or #a))
      end
    else
      for j = 1, n do
        i = j; reply[4 + j] = f(msg[5 + j])
      end
    end
  end
  local function run_items(f, items, lo, n, star)
    if star then
      for j = 1, n do
        local a = items[lo + j - 1]
        i = j; reply[4 + j] = f(unpack(a, 1, a.n or #a))
      end
    else
      for j = 1, n do
        i = j; reply[4 + j] = f(items[lo + j - 1])
      end
    end
  end

  while true do
    local msg = m:receive_blocking()
    local op = msg[1]
    if op == "t" or op == "r" then
      reply = { msg[2], 0, 0, false }
      local f, ferr
      if op == "t" then
        f = fns[msg[3]]
        if type(f) == "table" then ferr = f[1]; f = nil end
        if f == nil and not ferr then
          ferr = { message = "coproc pool: unknown function id " .. tostring(msg[3]), traceback = "" }
        end
      else
        f, ferr = lazy_fn, lazy_err
      end
      ferr = init_err or ferr
      if ferr then
        reply[4] = ferr
      else
        i = 0
        local t0 = clock()
        local ok, e
        if op == "t" then
          ok, e = xpcall(run_args, err_handler, f, msg, msg[5], msg[4])
        else
          ok, e = xpcall(run_items, err_handler, f, lazy.items, msg[3], msg[4], lazy.star)
        end
        reply[2] = clock() - t0
        if ok then
          reply[3] = i
        else
          reply[3] = i - 1
          reply[4] = e   -- item i raised before its result was stored
        end
      end
      m:send_reply(reply)
    elseif op == "f" then
      local ok, f = pcall(M.resolve, msg[3])
      fns[msg[2]] = ok and f or { { message = tostring(f), traceback = tostring(f) } }
    elseif op == "d" then
      fns[msg[2]] = nil
    end
  end
end

return M
