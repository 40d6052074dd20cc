--- coproc.errors: error classes. Every error coproc raises is a table with
-- `class`, `message` and, for remote errors, `traceback`; `tostring` gives one
-- readable line; `coproc.is(err, Class)` tests the class (and its parents).
local core = require "coproc.core"

local M = {}

-- Taken at load time: workers describe errors with these after a task may
-- have set the globals to nil.
local type, error, pcall, tostring, rawget = type, error, pcall, tostring, rawget
local setmetatable, getmetatable, pairs, ipairs = setmetatable, getmetatable, pairs, ipairs
local sort, concat = table.sort, table.concat

local Error = {}
Error.__index = Error
Error.__name = "coproc.Error"

function Error.__tostring(e)
  local cls = rawget(e, "class")
  local name = type(cls) == "table" and cls.name or tostring(cls)
  return name .. ": " .. tostring(rawget(e, "message"))
end

local classes = {}

--- Define an error class. `parent` defaults to the root class coproc.Error.
function M.define(name, parent)
  local cls = setmetatable({ name = name, parent = parent or M.Error }, {
    __tostring = function(c) return "coproc." .. c.name end,
    -- Calling a class makes an error object: Timeout("msg", {fields}).
    __call = function(c, message, fields)
      local e = fields or {}
      e.class, e.message = c, message or c.name
      return setmetatable(e, Error)
    end,
  })
  classes[name] = cls
  M[name] = cls
  return cls
end

M.Error = M.define("Error")
M.Error.parent = nil

--- true when err is a coproc error of class cls or of a subclass of it.
function M.is(err, cls)
  if type(err) ~= "table" or getmetatable(err) ~= Error then return false end
  if cls == nil then return true end
  local c = err.class
  while c do
    if c == cls then return true end
    c = c.parent
  end
  return false
end

--- A line of text for any error value: a string as it is, an object with
-- __tostring through it, a table as a short rendering of its plain fields
-- (`{code = 404, msg = "not found"}`), a number or boolean as tostring
-- gives it (`42`, `false`), anything else by its type.
function M.describe_value(v)
  if type(v) == "string" then return v end
  local mt = getmetatable(v)
  if mt and mt.__tostring then
    local ok, s = pcall(tostring, v)
    if ok and type(s) == "string" then return s end
  end
  local vt = type(v)
  if vt == "number" or vt == "boolean" then return tostring(v) end  -- as lua5.4 shows error(42)
  if vt ~= "table" then return ("(a %s error value)"):format(vt) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  local parts = {}
  for i, k in ipairs(keys) do
    if i > 6 then parts[#parts + 1] = "..."; break end
    local val, t = v[k], type(v[k])
    local shown = t == "string" and ("%q"):format(#val > 40 and val:sub(1, 40) .. "..." or val)
      or (t == "number" or t == "boolean") and tostring(val) or ("<" .. t .. ">")
    local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or ("[" .. tostring(k) .. "]")
    parts[#parts + 1] = key .. " = " .. shown
  end
  return "{" .. concat(parts, ", ") .. "}"
end

--- The fields of a coproc error that are plain data (strings, numbers,
-- booleans under string keys, class and message left out): what travels
-- with it from a worker so the host can rebuild it.
function M.plain_fields(e)
  local out = {}
  for k, v in pairs(e) do
    local t = type(v)
    if k ~= "class" and k ~= "message" and type(k) == "string"
        and (t == "string" or t == "number" or t == "boolean") then
      out[k] = v
    end
  end
  return out
end

--- Raise an error of class cls with a message (level as in `error`).
function M.raise(cls, message, fields)
  error(cls(message, fields), 0)
end

M.define "ResourceRequestedClose"
M.define "WorkerError"
M.define "WorkerDied"
M.define "Timeout"
M.define "EncodeError"
M.define "ProtocolError"
M.define "WorkerIsAlreadyAliveError"
M.define "WorkerIsAlreadyDeadError"
M.define "WorkerIsDeadError"
M.define "Cancelled"
M.define "Interrupted"  -- Ctrl-C (SIGINT) stopped a wait or the script
M.define "OSError"      -- a system call failed: errno, call, message (and path when a file)
M.define "MonitorError" -- coproc.monitor could not do what was asked (see docs/monitor.md)
M.define "QueueFull"    -- a messenger holds back reading: its queues are over max_queued
M.define "CallbackError" -- a future's done callback raised: value, traceback, future

M.ErrorMeta = Error

-- The C core raises plain {class = "Name", message = ...} tables through
-- this factory, which gives them their class and metatable.
core.set_error_factory(function(t)
  local cls = classes[t.class] or M.Error
  t.class = cls
  return setmetatable(t, Error)
end)

return M
