--- coproc.iterable: the items a pool call accepts. A list (a table, with
-- `.n` for trailing nils), or an iterator: a function, a generic-for triple
-- (`pool:map(f, ipairs(t))`, `pool:imap(f, io.lines(path))`), or a
-- coproc.iter(...) object, which also lets options follow:
-- `pool:imap(f, coproc.iter(io.lines(path)), {chunksize = 100})`.
--
-- What each step gives as the item: the iterator is called as the generic
-- for calls it (f(state, control), the control being its last first value)
-- and stops when its first value is nil; the item is its second value when
-- it returns two or more (ipairs, pairs, utf8.codes: the value, not the
-- key), else its only value (io.lines, string.gmatch, lfs.dir,
-- coroutine.wrap). The closing value (the fourth value of io.lines) is
-- closed when the pool is done with the iterator.
local M = {}

local select, type, getmetatable = select, type, getmetatable

local Iter = { __name = "coproc.Iter" }
Iter.__index = Iter
M.Iter = Iter

function Iter.__tostring() return "coproc.Iter" end

local function callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(v) == "table" and mt ~= nil and mt ~= Iter and mt.__call ~= nil
end

--- coproc.iter(f, state, control, closing): the values of a generic for as
-- one argument, for the pool calls and WorkerResourcePool:map_messages.
function M.iter(f, state, control, closing)
  if not callable(f) then
    error(("bad argument #1 to 'iter' (iterator function expected, got %s)"):format(type(f)), 2)
  end
  return setmetatable({ f = f, s = state, c = control, closing = closing }, Iter)
end

function M.is_iter(v) return getmetatable(v) == Iter end

-- (first, item) of one step: item is the second value when there is one.
local function step(k, ...)
  if select("#", ...) > 0 then return k, (...) end
  return k, k
end

--- A source: pull() -> true, item, or false once the iterator is done;
-- close() closes the closing value (idempotent, never raises).
function M.source(f, s, c, closing)
  local src = { done = false }
  function src.pull()
    if src.done then return false end
    local k, item = step(f(s, c))
    if k == nil then
      src.done = true
      src.close()
      return false
    end
    c = k
    return true, item
  end
  function src.close()
    local t = closing
    if t == nil then return end
    closing = nil
    local mt = getmetatable(t)
    local cl = mt and mt.__close
    if cl then pcall(cl, t, nil) end
  end
  return src
end

--- A source over list[1..n] (for a list given with buffersize).
function M.list_source(list, n)
  local k = 0
  local src = { done = false, close = function() end }
  function src.pull()
    if k >= n then
      src.done = true
      return false
    end
    k = k + 1
    return true, list[k]
  end
  return src
end

--- fill(src, buf, from, k) -> how many items it put in buf[from..], up to
-- k; fewer only when the iterator ended. Errors of the iterator propagate.
function M.fill(src, buf, from, k)
  local pull = src.pull
  for j = 0, k - 1 do
    local more, v = pull()
    if not more then return j end
    buf[from + j] = v
  end
  return k
end

--- collect(src) -> list with .n: every item (LazyPool forks after this).
function M.collect(src)
  local t, n = {}, 0
  while true do
    local more, v = src.pull()
    if not more then break end
    n = n + 1
    t[n] = v
  end
  t.n = n
  return t
end

--- Look at a pool call's arguments after fn: (items, a, b, c).
-- Returns "list", items, opts for a list (opts = a);
--         "iter", source, opts for an iterator (opts from a coproc.iter
-- object's following argument, or none after a bare function / triple).
-- `spec` names the call's options: a bare iterator function followed by
-- what is plainly an options table (its keys all options of the call) is
-- the mistake `pool:imap(f, io.lines(p), opts)`, where Lua passes only the
-- first value of io.lines: it raises, saying to use coproc.iter.
function M.args(items, a, b, c, what, level, spec)
  level = level + 1
  if M.is_iter(items) then
    return "iter", M.source(items.f, items.s, items.c, items.closing), a
  end
  if type(items) == "function" then   -- a table is a list, even a callable one
    if type(a) == "table" and getmetatable(a) == nil and b == nil and next(a) ~= nil then
      local all = true
      for k in pairs(a) do
        if type(k) ~= "string" or spec[k] == nil then all = false; break end
      end
      if all then
        error(("bad argument #3 to '%s' (options cannot follow an iterator function: Lua passes only "
          .. "its first value there; wrap it: pool:%s(fn, coproc.iter(io.lines(path)), opts))"):format(what, what),
          level)
      end
    end
    return "iter", M.source(items, a, b, c), nil
  end
  if type(items) ~= "table" then
    error(("bad argument #2 to '%s' (list or iterator expected, got %s)"):format(what, type(items)), level)
  end
  return "list", items, a
end

return M
