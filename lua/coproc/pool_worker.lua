--- coproc.pool_worker: the loop each Pool / LazyPool worker runs.
--
-- Runs in the worker process. The host (lua/coproc/pool.lua) sends, on the
-- default channel of the worker's messenger:
--
--   {"f", fid, kind, data, state}   define function fid: kind "code" (data is
--                                   the function encoded by coproc.encode),
--                                   "name" (data is "module.function") or
--                                   "inherit" (data is the id of a function
--                                   in kw.inherited, the inherited copy an
--                                   "inherit" pool found at its start); state
--                                   "none", "scalars" or false, see below.
--                                   Sent with the lowest priority number so it
--                                   is popped before any batch that uses it
--   {"d", fid}                      forget function fid
--   {"t", bid, fid, jid, star, ended, ticket, n, a1..an}
--                                   run fn(a_j) for j = 1..n (fn(unpack(a_j))
--                                   when star) as one batch of job jid; ended
--                                   is false or a list of jobs that are over;
--                                   each item is claimed on the ticket before
--                                   it runs: the host may take back the tail
--                                   of a batch for an idle worker (lbatch.h)
--   {"e", {jid...}}                 these jobs are over (when there is no batch
--                                   to carry the list)
--   {"r", bid, lo, n, ticket}       LazyPool: run the inherited fn on the
--                                   inherited items lo .. lo+n-1
--
-- and gets one reply per batch: {bid, seconds, nok, err, r1..r_nok}: nok
-- items ran (their first results follow) and err is false or a table
-- {message, traceback, class, value, kind} for item nok+1, at which the
-- batch stopped. seconds is the worker's CPU time for the batch: the host's
-- cost estimate, which sizes batches and in-flight windows.
--
-- Every call runs with the function as the host had it when the call was
-- made: a "code" function is decoded afresh for each job (jid), so upvalues
-- changed in the host between calls (they make a new definition), and
-- changes the function made to its own upvalues in an earlier call, never
-- leak into a later one. Cheaper where that is invisible: a function whose
-- only upvalue is an _ENV that is the globals (state "none") is decoded once; one whose upvalues
-- are scalars ("scalars") is decoded again only when a call changed them.
--
-- Nothing a batch does ends the worker: receiving, decoding, calling and
-- replying are each protected, and a result that cannot be sent becomes an
-- EncodeError for its item. Only a real crash (a signal, os.exit, running
-- out of memory) or the host going away ends it. Before each item the C
-- batch loop records (bid, item) in a slot shared with the host, which then
-- names the item a dying worker was running.
local core = require "coproc.core"
local errors = require "coproc.errors"

local M = {}

-- Everything used at call time is a local taken at load time: a task may
-- set globals such as `type` or `table` to nil, and the loop serving it
-- must go on (docs/pool.md, "Errors").
local type, error, pcall, xpcall, require = type, error, pcall, xpcall, require
local tostring, rawget, getmetatable, pairs = tostring, rawget, getmetatable, pairs
local traceback, getupvalue = debug.traceback, debug.getupvalue
local unpack, concat = table.unpack, table.concat
local math_type = math.type
local clock = os.clock
local globals = _G
local encode, decode, decode_prefix = core.encode, core.decode, core.decode_prefix
local run_batch, batch_item, batch_done, claim = core.run_batch, core.batch_item, core.batch_done, core.claim
local table_new = core.table_new

local BATCH_HEAD = 8   -- {"t", bid, fid, jid, star, ended, ticket, n}, then the items

local function callable(v)
  if type(v) == "function" then return true end
  local mt = type(v) == "table" and getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__call") ~= nil
end

-- The first line of a message, for require's "module 'x' not found:" and
-- its list of every path it tried.
local function first_line(s)
  return (s:match("^[^\n]*"):gsub(":$", ""))
end

--- Find a function by name: "mod.fn", "mod.sub.fn" (longest requirable
-- module prefix wins), or a global path like "string.format" / "print".
-- A module that exists but raises while loading is an error naming it and
-- carrying its error, not a name that cannot be found.
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
  local v, found, missing = nil, nil, nil   -- found: parts[1..found] is a module
  for cut = #parts - 1, 1, -1 do
    local modname = concat(parts, ".", 1, cut)
    local ok, mod = pcall(require, modname)
    if ok then v, found = walk(mod, cut + 1), cut; break end
    local why = type(mod) == "string" and mod or errors.describe_value(mod)
    -- require's own "not found" names this module; anything else (the
    -- module raised, or a module it requires is missing) is its load error.
    if why:find("module '" .. modname .. "' not found", 1, true) ~= 1 then
      why = why:gsub("\n%s*", " ")   -- a syntax error is on the line after "error loading module"
      error(("cannot load module '%s' for '%s': %s"):format(modname, name, why), 0)
    end
    missing = missing or first_line(why)
  end
  if v == nil then v = walk(globals, 1) end
  if not callable(v) then
    local why
    if v ~= nil then why = "it is a " .. type(v)
    elseif found then
      why = ("module '%s' has no function '%s'"):format(concat(parts, ".", 1, found), concat(parts, ".", found + 1))
    else why = missing end
    error(("cannot resolve function name '%s' in the worker%s"):format(name, why and ": " .. why or ""), 0)
  end
  return v
end

local function is_coproc_error(e)
  local mt = getmetatable(e)
  return type(e) == "table" and mt ~= nil and rawget(mt, "__name") == "coproc.Error"
end

local function message_of(e)
  if is_coproc_error(e) then return tostring(rawget(e, "message")) end
  return errors.describe_value(e)
end

--- What an error raised by a task turns into on the wire: its message, the
-- worker's traceback, the coproc class name when it is a coproc error, and
-- the value itself when it is neither a string nor a coproc error and can
-- be sent (error({code = 404}) arrives as err.value.code == 404).
-- A pool with trust = "data" refuses functions and metatables in replies:
-- an error value with them would turn the task's error into "refused", so
-- there the value goes only when it is plain data (its message always goes).
local DATA_ONLY = { trust = "data" }
local values_trust = "code"

local function sendable(v)
  local ok, s = pcall(encode, v)
  if not ok then return false end
  return values_trust ~= "data" or (pcall(decode, s, DATA_ONLY))
end

local function describe(e, level)
  local msg = message_of(e)
  local info = { message = msg, traceback = traceback(msg, level or 2) }
  if is_coproc_error(e) then
    local cls = rawget(e, "class")
    info.class = type(cls) == "table" and cls.name or nil
    info.fields = errors.plain_fields(e)
  elseif type(e) ~= "string" and e ~= nil then
    if sendable(e) then info.value = e end
  end
  return info
end

local function err_handler(e) return describe(e, 2) end

local function failure(kind, message)
  return { message = message, traceback = "", kind = kind }
end

--- The worker loop. kw: initializer, initargs. lazy: {fn=, items=, star=}
-- (LazyPool, inherited by fork, never sent).
function M.run(m, kw, lazy)
  kw = kw or {}
  if kw.max_frame then m:set_max_frame(kw.max_frame) end
  if kw.trust == "data" then values_trust = "data" end
  local defs = {}         -- fid -> {kind, data, shared, fn, err}
  local insts = {}        -- jid -> {fid =, fn =} (non-shared functions)
  local init_err = false  -- once set, every task fails with it (pool stays sane)

  if kw.initializer ~= nil then
    local args = kw.initargs or {}
    local ok, e = xpcall(function()
      M.resolve(kw.initializer)(unpack(args, 1, args.n or #args))
    end, err_handler)
    if not ok then
      e.message = "initializer failed: " .. e.message
      init_err = e
    end
  end

  local lazy_fn, lazy_err
  if lazy then
    local ok, f = pcall(M.resolve, lazy.fn)
    if ok then lazy_fn = f else lazy_err = failure("resolve", message_of(f)) end
  end

  -- Upvalue values of f, to see later whether a call changed them.
  local function upvalues_of(f)
    local vals, i = {}, 1
    while true do
      local name, v = getupvalue(f, i)
      if name == nil then return vals end
      vals[i] = v
      i = i + 1
    end
  end
  local function unchanged(f, vals)
    local i = 1
    while true do
      local name, v = getupvalue(f, i)
      if name == nil then return true end
      if v ~= vals[i] then return false end
      i = i + 1
    end
  end

  -- The function of a batch: fn, or nil and an error description.
  local function function_for(fid, jid)
    local d = defs[fid]
    if not d then return nil, failure("internal", "coproc pool: unknown function id " .. tostring(fid)) end
    if d.err then return nil, d.err end
    local inst = insts[jid]
    if inst and inst.fid == fid then return inst.fn end
    if d.fn and (d.state == "none" or (d.state == "scalars" and unchanged(d.fn, d.vals))) then
      if d.state == "scalars" then insts[jid] = { fid = fid, fn = d.fn } end
      return d.fn
    end
    local ok, f
    if d.kind == "name" then
      ok, f = pcall(M.resolve, d.data)
    elseif d.kind == "inherit" then
      f = kw.inherited and kw.inherited[d.data]
      ok = f ~= nil
      if not ok then f = "no inherited function " .. tostring(d.data) end
    else
      ok, f = pcall(decode, d.data)
      if ok and not callable(f) then
        ok, f = false, "the function decoded to a " .. type(f)
      end
    end
    if not ok then
      local e = failure("resolve", "cannot load the function in the worker: " .. message_of(f))
      if d.state == "none" then d.err = e end
      return nil, e
    end
    if d.state == "none" then
      d.fn = f
    else
      if d.state == "scalars" and type(f) == "function" then d.fn, d.vals = f, upvalues_of(f) end
      insts[jid] = { fid = fid, fn = f }
    end
    return f
  end

  -- The reply goes as its head and a slice of itself: the results are
  -- encoded in place, nils included, with no walk to tell an array.
  local send_slice = m.send_reply_slice
  local function send(reply)
    local nok = reply[3]
    return pcall(send_slice, m, { reply[1], reply[2], nok, reply[4] }, reply, 5, 4 + nok)
  end

  -- Results a..b of reply as parts ({bid, 0, count, true, results...}, the
  -- host keeps the batch open), halving a part that is over the frame
  -- limit. Returns true, or false and the error of the first result not sent.
  local function too_big(e) return tostring(message_of(e)):find("maximum frame size", 1, true) ~= nil end
  local function send_parts(reply, a, b)
    local ok, e = pcall(send_slice, m, { reply[1], 0, b - a + 1, true }, reply, 4 + a, 4 + b)
    if ok then return true end
    if b > a and too_big(e) then
      local mid = (a + b) // 2
      local ok1, e1 = send_parts(reply, a, mid)
      if not ok1 then return false, e1 end
      return send_parts(reply, mid + 1, b)
    end
    return false, e
  end

  -- Send the reply; a result that cannot be sent becomes an EncodeError for
  -- its item (the items before it are still delivered). Results that fit
  -- one by one but not all in one frame go as parts.
  local function reply_with(reply)
    local ok, e = send(reply)
    if ok then return true end
    local cls = is_coproc_error(e) and rawget(e, "class")
    if not (cls and cls.name == "EncodeError") then return false, e end
    local nok = reply[3]
    if nok > 1 and too_big(e) then
      local sent, pe = send_parts(reply, 1, nok)
      if sent then return send({ reply[1], reply[2], 0, reply[4] }) end
      -- the parts before the failing one went; that result cannot go (or
      -- the link broke): the host counts the error from the item after them
      local pcls = is_coproc_error(pe) and rawget(pe, "class")
      if not (pcls and pcls.name == "EncodeError") then return false, pe end
      local why = message_of(pe):gsub("^EncodeError: ", ""):gsub("^cannot send: ", "")
      return send({ reply[1], reply[2], 0, failure("encode", "the result cannot be sent to the host: " .. why) })
    end
    local bad, why = nil, message_of(e)
    for j = 1, nok do
      local eok, ee = pcall(encode, reply[4 + j])
      if not eok then bad, why = j, message_of(ee); break end
    end
    if bad == nil and reply[4] then
      -- The error description itself (its value) is what could not go.
      reply[4].value = nil
      if send(reply) then return true end
      bad = nok + 1
    end
    bad = bad or 1
    for j = 4 + bad, 4 + nok do reply[j] = nil end
    reply[3] = bad - 1
    why = why:gsub("^EncodeError: ", ""):gsub("^cannot send: ", "")
    reply[4] = failure("encode", "the result cannot be sent to the host: " .. why)
    ok, e = send(reply)
    if ok then return true end
    -- Even that failed (a frame-size limit on the whole batch): report at
    -- the first item of the batch.
    for j = 5, 4 + reply[3] do reply[j] = nil end
    reply[3] = 0
    reply[4] = failure("encode", "the results cannot be sent to the host: " .. message_of(e))
    return send(reply)
  end

  -- Run a batch and reply {bid, seconds, nok, err, results...}. nok is less
  -- than n without an error when the host took the rest back.
  local function run(bid, ticket, f, ferr, src, lo, n, star, late_err)
    if math_type(ticket) ~= "integer" then ticket = 0 end
    local reply = table_new(4 + n, 0)
    reply[1], reply[2], reply[3], reply[4] = bid, 0, 0, false
    if ferr then
      if claim(ticket, 1) then reply[4] = ferr end
    else
      local t0 = clock()
      local ok, e = xpcall(run_batch, err_handler, f, src, lo, n, star, reply, 4, bid, ticket)
      reply[2] = clock() - t0
      if ok then
        reply[3] = e
        if late_err and e == n and claim(ticket, n + 1) then reply[4] = late_err end
      else
        reply[3] = batch_item() - 1
        reply[4] = e   -- item nok+1 raised before its result was stored
      end
    end
    local ok, e = reply_with(reply)
    batch_done()
    return ok, e
  end

  while true do
    local ok, raw = pcall(m.receive_raw, m)
    if not ok then
      local cls = is_coproc_error(raw) and rawget(raw, "class")
      if cls and cls.name == "ResourceRequestedClose" then return end
      error(raw, 0)   -- the connection is gone: nothing more can arrive
    end
    local msg, bad, derr
    if decode_prefix then
      msg, bad, derr = decode_prefix(raw)
    else
      local dok, v = pcall(decode, raw)
      if dok then msg = v else msg, bad, derr = {}, 1, message_of(v) end
    end
    local op = msg[1]
    local sent_ok, sent_err = true, nil
    if op == "t" then
      local bid, fid, jid, star, ended, ticket, n = msg[2], msg[3], msg[4], msg[5], msg[6], msg[7], msg[8]
      if type(ended) == "table" then
        for i = 1, #ended do insts[ended[i]] = nil end
      end
      if bid ~= nil and (bad == nil or bad > BATCH_HEAD) and math_type(n) == "integer" then
        local f, ferr = function_for(fid, jid)
        ferr = init_err or ferr
        local nrun, late = n, false
        if bad then
          nrun = bad - BATCH_HEAD - 1
          late = failure("decode", "the item cannot be decoded in the worker: " .. derr)
        end
        sent_ok, sent_err = run(bid, ticket, f, ferr, msg, BATCH_HEAD + 1, nrun, star, late)
      elseif bid ~= nil then
        sent_ok, sent_err = run(bid, math_type(ticket) == "integer" and ticket or 0, nil,
          failure("decode", "coproc pool: malformed batch: " .. tostring(derr)), msg, 1, 0, false)
      end
    elseif op == "r" then
      if lazy then
        sent_ok, sent_err = run(msg[2], msg[5], lazy_fn, init_err or lazy_err, lazy.items, msg[3], msg[4], lazy.star)
      else
        sent_ok, sent_err = run(msg[2], msg[5], nil, failure("internal", "coproc pool: not a LazyPool worker"),
          msg, 1, 0, false)
      end
    elseif op == "f" then
      if not bad then
        defs[msg[2]] = { kind = msg[3], data = msg[4], state = msg[5] }
      elseif msg[2] ~= nil then
        defs[msg[2]] = { err = failure("decode", "cannot receive the function: " .. tostring(derr)) }
      end
    elseif op == "e" then
      local ended = msg[2]
      if type(ended) == "table" then
        for i = 1, #ended do insts[ended[i]] = nil end
      end
    elseif op == "d" then
      local d = defs[msg[2]]
      defs[msg[2]] = nil
      if d then
        for jid, inst in pairs(insts) do
          if inst.fid == msg[2] then insts[jid] = nil end
        end
      end
    end
    if not sent_ok then
      local cls = is_coproc_error(sent_err) and rawget(sent_err, "class")
      if cls and cls.name == "ResourceRequestedClose" then return end
      error(sent_err, 0)
    end
  end
end

return M
