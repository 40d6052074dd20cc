--- coproc.flushing (internal): `os.execute`, `io.popen` and `os.exit` that
-- first write the pending output of every messenger of this process.
--
-- A send within 50 µs of the previous write is corked so that a burst goes
-- out in one write (docs/design-notes.md, "Coalesced sends"); it is written
-- by the next coproc call or within 20,000 Lua instructions. A command run by
-- os.execute or io.popen blocks in C, where neither happens: a reply sent just
-- before it would wait as long as the command runs, and would be lost if the
-- command ends this process. Loaded once per Lua state (by coproc and by every
-- worker); the originals stay reachable as the wrappers' upvalues.
local core = require "coproc.core"

local flush_all = core.flush_all
local function flushing(f)
  return function(...)
    flush_all()
    return f(...)
  end
end

os.execute = flushing(os.execute)  -- luacheck: ignore 122
io.popen = flushing(io.popen)      -- luacheck: ignore 122

-- os.exit ends the process: what is still to be written goes first (a
-- worker's last reply), waiting at most EXIT_FLUSH_SECONDS for peers that
-- read slowly, as a worker that returns does.
local EXIT_FLUSH_SECONDS = 10
local exit = os.exit
os.exit = function(...)  -- luacheck: ignore 122
  pcall(flush_all, EXIT_FLUSH_SECONDS)
  return exit(...)
end

return true
