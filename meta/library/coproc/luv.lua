---@meta coproc.luv
-- LuaCATS definitions of `require "coproc.luv"`: messengers and pools inside a luv
-- (libuv) loop (docs/eventloops.md). Needs lua-luv; coproc itself does not.

---@class coproc.luv
local luv = {}

---@class coproc.luv.OnMessageOptions
---@field channel? coproc.Channel The channel to deliver (default: the default channel).

---fn(nil, data, message) in the loop for each message of the channel as it arrives (the
---message table of `receive_message_blocking`); fn(err) once when the connection ends, a
---close request or the other side's error arrives, and the handle stops. Active handles
---keep the loop alive.
---@param m coproc.Messenger
---@param fn fun(err?: coproc.Error, data?: any, message?: coproc.Message)
---@param opts? coproc.luv.OnMessageOptions
---@return coproc.luv.Subscription
function luv.on_message(m, fn, opts) end

---While the loop runs, the pool sends its work, takes the replies, replaces dead workers and
---runs done callbacks. The loop is kept alive while the pool has unfinished work.
---@param pool coproc.Pool
---@return coproc.luv.Drive
function luv.drive(pool) end

---@class coproc.luv.Subscription
local Subscription = {}
function Subscription:stop() end
---@return boolean
function Subscription:is_active() end

---@class coproc.luv.Drive
local Drive = {}
function Drive:stop() end
---@return boolean
function Drive:is_active() end

return luv
