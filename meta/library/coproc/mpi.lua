---@meta coproc.mpi
-- `require "coproc.mpi"` (also coproc.mpi): coproc's Pool and WorkerResource
-- over the ranks of an MPI job (Open MPI). Start the job with
-- `mpirun -n N coproc-lua -m coproc.mpi script.lua args...` (or srun): rank 0
-- runs the script, ranks 1..N-1 serve. See docs/mpi.md.

---@class coproc.mpi.PoolOptions: coproc.PoolOptions
---@field per_rank? integer each rank runs this many local worker processes (the pool has ranks * per_rank workers)

---One serving rank, as coproc.mpi.ranks() reports it.
---@class coproc.mpi.RankInfo
---@field rank integer
---@field pid integer the rank's process id, on its node
---@field node string MPI_Get_processor_name of the rank
---@field state "free"|"busy"|"relay"|"lost"|"dead" relay: a hybrid pool's; lost: a worker did not stop; dead: the rank called os.exit

---@class coproc.mpi
local mpi = {}

---A coproc.Pool whose workers are `n` free serving ranks (default: every free
---one); with `per_rank = k`, each rank runs k local worker processes. Every
---method and option of coproc.Pool, but method = "inherit". Batches go without
---tickets (no work stealing across ranks; a task already sent cannot be cancelled).
---@param n? integer|coproc.mpi.PoolOptions
---@param opts? coproc.mpi.PoolOptions
---@return coproc.Pool
function mpi.Pool(n, opts) end

---A stateful worker bound to a free serving rank, with the messenger API of a
---local one. Not started: call `start`.
---@param target table|fun(messenger: coproc.Messenger, kwargs: table)
---@param opts? coproc.WorkerResourceOptions method "fresh" only
---@return coproc.mpi.WorkerResource
function mpi.WorkerResource(target, opts) end

---The serving ranks and what they do.
---@return coproc.mpi.RankInfo[]
function mpi.ranks() end

---0 in the script of a job started with `-m coproc.mpi`; nil elsewhere.
---@return integer?
function mpi.rank() end

---The number of ranks of the job (rank 0 included); nil outside one.
---@return integer?
function mpi.size() end

---The entry point of `coproc-lua -m coproc.mpi script.lua args...`, on every
---rank: rank 0 runs the script, the others serve. Returns the exit status.
---@param args string[] the script and its arguments
---@return integer
function mpi.main(args) end

---A worker on a serving rank (`<close>` stops it).
---@class coproc.mpi.WorkerResource
---@field messenger coproc.Messenger rank 0's end of the link (set by start)
---@field target table|function
local WorkerResource = {}

---Start the worker on a free rank; `kwargs` become fields of the instance.
---Raises EncodeError before a rank is taken, an error naming the ranks when none is free.
---@param kwargs? table
---@return coproc.mpi.WorkerResource
function WorkerResource:start(kwargs) end

---The rank it runs on (nil before start).
---@return integer?
function WorkerResource:rank() end

---"rank 2 (pid 4242 on node7)"; a hybrid pool's worker: "rank 2, local worker 4243 (node7)".
---@return string
function WorkerResource:describe() end

---The pid of the process running it (on its own node).
---@return integer?
function WorkerResource:pid() end

---@return boolean
function WorkerResource:is_alive() end

---True once started.
---@return boolean
function WorkerResource:process_exists() end

---Wait for the worker to end on its own; true when it has.
---@param timeout? number
---@return boolean
function WorkerResource:join(timeout) end

---The exit code once ended (a hybrid worker killed by a signal: nil, signal).
---@return integer? code
---@return integer? signal
function WorkerResource:exitcode() end

---Close request, then `timeout` seconds (default 1). A worker that does not
---stop leaves its rank "lost" (no signal reaches another node); the end of the
---job then aborts it. Raises WorkerIsAlreadyDeadError if not running.
---@param timeout? number
function WorkerResource:terminate(timeout) end

---Like terminate, never raises.
---@param timeout? number
function WorkerResource:close(timeout) end

---Stop it if it runs, start it again (kwargs nil: the last ones).
---@param kwargs? table
---@param timeout? number
---@return coproc.mpi.WorkerResource
function WorkerResource:reset_process(kwargs, timeout) end

return mpi
