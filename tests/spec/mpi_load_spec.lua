-- coproc.mpi without MPI: `require "coproc"` (and coproc.mpi itself) never
-- loads the MPI module or libmpi; its calls outside an MPI job say how to
-- start one. The MPI side itself is tested under mpirun (tests/mpi).
local describe, it, assert = describe, it, assert
local _ENV = _G   -- functions sent to workers take their globals, not busted's sandbox
local coproc = require "coproc"

local function maps_libmpi()
  local f = io.open("/proc/self/maps")
  if not f then return false end
  local s = f:read("a")
  f:close()
  return s:find("libmpi", 1, true) ~= nil
end

describe("coproc.mpi outside an MPI job", function()
  it("is reachable as coproc.mpi, and loads neither coproc.mpi_core nor libmpi", function()
    assert.equal(require("coproc.mpi"), coproc.mpi)
    assert.is_function(coproc.mpi.Pool)
    assert.is_nil(package.loaded["coproc.mpi_core"])
    assert.is_false(maps_libmpi())
  end)

  it("coproc/core.so does not link MPI", function()
    local dir = os.getenv("COPROC_BUILD_DIR")
    if not dir then return end
    local p = assert(io.popen("ldd " .. dir .. "/coproc/core.so 2>&1"))
    local out = p:read("a")
    p:close()
    assert.is_nil(out:find("libmpi", 1, true))
  end)

  it("says how to start a job", function()
    for _, f in ipairs { function() coproc.mpi.Pool() end, function() coproc.mpi.WorkerResource({}):start() end,
        coproc.mpi.ranks } do
      local ok, e = pcall(f)
      assert.is_false(ok)
      assert.matches("mpirun %-n N coproc%-lua %-m coproc%.mpi script%.lua", tostring(e))
    end
    assert.is_nil(coproc.mpi.rank())
    assert.is_nil(coproc.mpi.size())
  end)
end)
