---@meta coproc.cqueues
-- LuaCATS definitions of `require "coproc.cqueues"`: once required, coproc waits in a
-- coroutine a cqueues controller manages yield to it (docs/eventloops.md). Needs
-- lua-cqueues; coproc itself does not.

---@class coproc.cqueues
local cqueues = {}

---A pollable for `cqueues.poll`, ready when a receive on `channel` would not wait. Make a
---new one for each poll.
---@param m coproc.Messenger
---@param channel? coproc.Channel
---@return table
function cqueues.pollable(m, channel) end

---While the pool has unfinished work, a coroutine of `cq` drives it: futures complete and
---done callbacks run while `cq` runs. A callback's error comes out of `cq:loop()`.
---@param cq userdata a cqueues controller
---@param pool coproc.Pool
---@return coproc.cqueues.Drive
function cqueues.drive(cq, pool) end

---@class coproc.cqueues.Drive
local Drive = {}
function Drive:stop() end
---@return boolean
function Drive:is_active() end

return cqueues
