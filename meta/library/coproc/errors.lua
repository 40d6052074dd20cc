---@meta coproc.errors
-- `require "coproc.errors"`: the error classes (also fields of `coproc`)
-- and the functions that make and test error objects.

---@class coproc.errors
---@field Error coproc.ErrorClass The root class.
---@field ResourceRequestedClose coproc.ErrorClass
---@field WorkerError coproc.ErrorClass
---@field WorkerDied coproc.ErrorClass
---@field Timeout coproc.ErrorClass
---@field EncodeError coproc.ErrorClass
---@field ProtocolError coproc.ErrorClass
---@field WorkerIsAlreadyAliveError coproc.ErrorClass
---@field WorkerIsAlreadyDeadError coproc.ErrorClass
---@field WorkerIsDeadError coproc.ErrorClass
---@field Cancelled coproc.ErrorClass
---@field OSError coproc.ErrorClass
---@field MonitorError coproc.ErrorClass
---@field Interrupted coproc.ErrorClass
---@field QueueFull coproc.ErrorClass
---@field CallbackError coproc.ErrorClass
---@field ErrorMeta metatable The metatable of every error object (`__tostring`).
local errors = {}

---Define an error class (a subclass of `parent`, default coproc.Error) and register it by name.
---@param name string
---@param parent? coproc.ErrorClass
---@return coproc.ErrorClass
function errors.define(name, parent) end

---True when `err` is a coproc error of class `cls` or of a subclass of it; with no `cls`, any coproc error.
---@param err any
---@param cls? coproc.ErrorClass
---@return boolean
function errors.is(err, cls) end

---Raise an error object of class `cls` (no position is added to the message).
---@param cls coproc.ErrorClass
---@param message string
---@param fields? table
function errors.raise(cls, message, fields) end

---A line of text for any error value: a string as it is, an object with
---__tostring through it, a table as a short rendering of its plain fields.
---@param v any
---@return string
function errors.describe_value(v) end

---The plain-data fields of a coproc error (strings, numbers, booleans under
---string keys; class and message left out): what travels with it from a worker.
---@param e coproc.Error
---@return table
function errors.plain_fields(e) end

return errors
