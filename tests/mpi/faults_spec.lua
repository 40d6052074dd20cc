-- A job whose ranks end: run by a plain busted, each case its own mpirun
-- (tests/mpi/scripts/die.lua). With Open MPI a rank that ends ends the job:
-- it must end within seconds, non-zero, saying which rank ran which item;
-- never hang. And the ends that are not faults: a normal end, os.exit,
-- a script error, a missing script.
local describe, it, assert = describe, it, assert
local coproc = require "coproc"

local lua = assert(os.getenv("COPROC_LUA"), "COPROC_LUA (the coproc-lua to test) is not set")
local mpirun = assert(os.getenv("CP_MPIRUN"), "CP_MPIRUN is not set")
local src = os.getenv("COPROC_SOURCE_DIR") or "."
local btl = os.getenv("CP_MPI_BTL")
local script = src .. "/tests/mpi/scripts/die.lua"

-- Output (stdout and stderr), exit status and seconds of one job.
local function job(args, n)
  local cmd = ("timeout -s KILL 60 %s --oversubscribe %s -n %d %s -m coproc.mpi %s 2>&1; echo \"status=$?\"")
    :format(mpirun, btl and ("--mca btl " .. btl) or "", n or 3, lua, args)
  local t0 = coproc.now()
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  local status = tonumber(out:match("status=(%d+)%s*$"))
  return out, status, coproc.now() - t0
end

describe("coproc.mpi faults", function()
  it("a rank that calls os.exit(3) mid-map ends the job, naming the rank and the item", function()
    local out, status, secs = job(script .. " exit")
    assert.are_not.equal(0, status)
    assert.is_true(secs < 30, "took " .. secs .. " s")
    assert.matches("rank %d %(pid %d+ on [^)]+%) called os%.exit%(3%)", out)
    -- said by rank 0 as soon as it knows (before the launcher's SIGTERM)
    assert.matches("coproc%.mpi: rank %d %(pid %d+ on [^)]+%) died %(exit code 3%) while running item 7; "
      .. "with MPI this ends the whole job", out)
    assert.is_nil(out:find("not reached", 1, true))
  end)

  it("a rank killed mid-map ends the job; rank 0 says what each rank ran", function()
    local out, status, secs = job(script .. " kill")
    assert.are_not.equal(0, status)
    assert.is_true(secs < 30, "took " .. secs .. " s")
    assert.matches("rank 0 got SIGTERM from the launcher", out)
    assert.matches("rank %d %(pid %d+ on [^)]+%), gone: running item 7 of a map", out)
    assert.is_nil(out:find("not reached", 1, true))
  end)

  it("a WorkerResource whose rank calls os.exit: WorkerDied names the rank", function()
    local out, status = job(script .. " resource")
    assert.matches("resource:%s+false%s+WorkerDied: rank %d %(pid %d+, os%.exit%(4%)%) closed its connection", out)
    assert.are_not.equal(0, status)
  end)

  it("a normal end: status 0, the script's arg and ..., ranks finalized", function()
    local out, status = job(script .. " ok a b")
    assert.equal(0, status)
    assert.matches("arg0=" .. script:gsub("%p", "%%%0") .. "%s+args=ok,a,b", out)
    assert.matches("sum=3", out)
    assert.is_nil(out:find("MPI_ABORT", 1, true))
  end)

  it("an error in the script: status 1, the error on stderr, the ranks stop", function()
    local out, status, secs = job(script .. " error")
    assert.equal(1, status)
    assert.is_true(secs < 30)
    assert.matches("the script failed", out)
    assert.is_nil(out:find("MPI_ABORT", 1, true))
  end)

  it("os.exit(5) in the script: status 5, the ranks stop first", function()
    local out, status = job(script .. " osexit")
    assert.equal(5, status)
    assert.is_nil(out:find("MPI_ABORT", 1, true))
  end)

  it("no script: usage and status 2", function()
    local out, status = job("", 2)
    assert.equal(2, status)
    assert.matches("usage: coproc%-lua %-m coproc%.mpi script%.lua", out)
  end)
end)
