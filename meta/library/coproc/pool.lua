---@meta coproc.pool
-- `require "coproc.pool"` (also coproc.Pool, coproc.LazyPool,
-- coproc.WorkerResourcePool): see docs/pool.md.

---@class coproc.PoolOptions
---@field n? integer workers (default coproc.cpu_count())
---@field processes? integer the same as n (Python's name)
---@field initializer? coproc.Fn run once in each worker as initializer(table.unpack(initargs))
---@field initargs? table
---@field maxtasksperchild? integer a worker is replaced after it was given this many items
---@field chunksize? integer default for the maps (default: automatic)
---@field priority? number default task priority (0); lower runs sooner
---@field retries? integer times the item a worker died running is run again (0)
---@field max_restarts? integer dead workers replaced within restart_window before the pool gives up (10 * n)
---@field restart_window? number seconds (5)
---@field progress? boolean progress bar for maps on stderr, only when it is a terminal
---@field progress_stream? file* draw the progress bar there even if not a terminal
---@field prefetch? integer fixed number of chunks in flight per worker (1: strict priority order)
---@field budget? number seconds of estimated work kept in flight per worker (0.004)
---@field method? "fresh"|"inherit" start method of the workers
---@field trust? "code"|"data" what the host accepts in replies ("data": no functions, metatables, names)
---@field timeout? number default timeout of the calls, seconds
---@field star? boolean unpack each item as the arguments (starmap)
---@field buffersize? integer items read from an iterator but not yet yielded, at most (16384)
---@field max_frame? integer the largest message between the pool and a worker, in bytes (512 MiB; 64 .. 2^32-1)
---@field functions? function[] inherit pools: functions the workers may run from their inherited copy

---@class coproc.MapOptions
---@field chunksize? integer the unit batches are made of
---@field priority? number
---@field timeout? number seconds; then coproc.Timeout (the pool stays usable)
---@field retries? integer
---@field progress? boolean
---@field progress_stream? file*
---@field star? boolean unpack each item as the arguments (imap)
---@field buffersize? integer items read from an iterator but not yet yielded, at most

---@class coproc.SubmitOptions
---@field priority? number
---@field retries? integer

---@class coproc.PoolStats
---@field workers integer
---@field replaced integer
---@field deaths integer
---@field tasks_done integer
---@field queued integer items not yet sent
---@field jobs integer unfinished calls
---@field state string "running", "closed", "broken", "terminated"
---@field last_replace_seconds? number

---Python's multiprocessing.Pool with priorities (`<close>` terminates it).
---@class coproc.Pool
local Pool = {}

---The results in item order, with `.n` (nil results are holes). Raises the error of the lowest failing item.
---@param fn coproc.Fn
---@param items any[]
---@param opts? coproc.MapOptions
---@return table results
function Pool:map(fn, items, opts) end

---`fn(table.unpack(args, 1, args.n or #args))` for each list of arguments.
---@param fn coproc.Fn
---@param arglists table[]
---@param opts? coproc.MapOptions
---@return table results
function Pool:starmap(fn, arglists, opts) end

---Ordered and lazy: `for i, result in pool:imap(fn, items) do`.
---@param fn coproc.Fn
---@param items any[]
---@param opts? coproc.MapOptions
---@return fun(): integer, any
function Pool:imap(fn, items, opts) end

---In completion order: `for i, result in pool:map_unordered(fn, items) do`.
---@param fn coproc.Fn
---@param items any[]
---@param opts? coproc.MapOptions
---@return fun(): integer, any
function Pool:map_unordered(fn, items, opts) end

---The same as map_unordered (Python's name).
---@param fn coproc.Fn
---@param items any[]
---@param opts? coproc.MapOptions
---@return fun(): integer, any
function Pool:imap_unordered(fn, items, opts) end

---`fn(...)` run in a worker; blocks for its result.
---@param fn coproc.Fn
---@param ... any
---@return any
function Pool:apply(fn, ...) end

---One task: `fn(table.unpack(args, 1, args.n or #args))`; returns at once.
---@param fn coproc.Fn
---@param args? any[]
---@param opts? coproc.SubmitOptions
---@return coproc.Future
function Pool:submit(fn, args, opts) end

---A Future with multiprocessing's AsyncResult names too; callback or error_callback runs in the host.
---@param fn coproc.Fn
---@param args? table
---@param opts? coproc.AsyncOptions
---@return coproc.Future
function Pool:apply_async(fn, args, opts) end

---The futures that are done, once at least one is (or after timeout seconds).
---@param futures coproc.Future[]
---@param timeout? number
---@return coproc.Future[]
function Pool:wait_any(futures, timeout) end

---The pids of the current workers.
---@return integer[]
function Pool:pids() end

---@return coproc.PoolStats
function Pool:stats() end

---No new work; `join` then waits for what was submitted.
function Pool:close() end

---Wait for all submitted work, then stop the workers (after close).
---@param timeout? number
---@return boolean
function Pool:join(timeout) end

---Unfinished work ends with coproc.Cancelled; workers get a close request, then SIGTERM, SIGKILL.
function Pool:terminate() end

---One round without a call waiting for anything in particular: send what fits, take the
---replies that have come (waiting up to `timeout` seconds, default 0), replace dead workers,
---run done callbacks. For a host loop that drives the pool (docs/eventloops.md). True when a
---worker had something. Raises a done callback's error (CallbackError).
---@param timeout? number
---@return boolean
function Pool:pump(timeout) end

---The messengers of the current workers, to poll for readability (ask again after each pump:
---dead workers are replaced).
---@return coproc.Messenger[]
function Pool:messengers() end

---Jobs submitted and not yet finished.
---@return integer
function Pool:unfinished() end

---What Pool:submit returns (concurrent.futures style).
---@class coproc.AsyncOptions
---@field callback? fun(result: any) called in the host when the task succeeds
---@field error_callback? fun(err: any) called in the host when it fails
---@field priority? number
---@field retries? integer

---@class coproc.Future
local Future = {}

---Call fn(future) when the task ends (at once if it has); errors in fn are
---kept and raised as CallbackError by the pool's next call.
---@param fn fun(f: coproc.Future)
function Future:add_done_callback(fn) end

---The result, as result() (multiprocessing's AsyncResult.get).
---@param timeout? number
---@return any
function Future:get(timeout) end

---Wait until it finished or timeout passed; never raises the task's error.
---@param timeout? number
---@return boolean finished
function Future:wait(timeout) end

---The same as done() (AsyncResult.ready).
---@return boolean
function Future:ready() end

---True when it finished without an error (an error if not done yet).
---@return boolean
function Future:successful() end

---The result, or raises the task's error (WorkerError, WorkerDied, Cancelled) or coproc.Timeout (the task goes on).
---@param timeout? number
---@return any
function Future:result(timeout) end

---The error the task ended with (nil if it succeeded); waits like result.
---@param timeout? number
---@return coproc.Error?
function Future:exception(timeout) end

---Finished, failed or cancelled (never blocks).
---@return boolean
function Future:done() end

---A worker holds the task.
---@return boolean
function Future:running() end

---True if no worker had it yet: then result raises Cancelled.
---@return boolean
function Future:cancel() end

---@return boolean
function Future:cancelled() end

---@class coproc.LazyPoolOptions
---@field n? integer
---@field trust? "code"|"data"
---@field chunksize? integer
---@field retries? integer
---@field timeout? number
---@field progress? boolean
---@field progress_stream? file*
---@field budget? number
---@field priority? number
---@field prefetch? integer
---@field max_restarts? integer
---@field restart_window? number
---@field star? boolean

---Forks n workers for each call ("inherit"): fn and items are never encoded.
---@class coproc.LazyPool
local LazyPool = {}

---@param fn function
---@param items any[]
---@param opts? coproc.LazyPoolOptions
---@return table results
function LazyPool:map(fn, items, opts) end

---@param fn function
---@param arglists table[]
---@param opts? coproc.LazyPoolOptions
---@return table results
function LazyPool:starmap(fn, arglists, opts) end

---Iterator of (index, result) in completion order; the workers end with the loop.
---@param fn function
---@param items any[]
---@param opts? coproc.LazyPoolOptions
---@return fun(): integer, any
function LazyPool:map_unordered(fn, items, opts) end

---The same as map_unordered.
---@param fn function
---@param items any[]
---@param opts? coproc.LazyPoolOptions
---@return fun(): integer, any
function LazyPool:imap_unordered(fn, items, opts) end

---Ordered and lazy, like Pool:imap; the workers end with the loop.
---@param fn coproc.Fn
---@param items any[]|function
---@param opts? coproc.MapOptions
---@return fun(): integer, any
function LazyPool:imap(fn, items, opts) end

---fn(...) in a forked worker (blocks).
---@param fn coproc.Fn
---@return any
function LazyPool:apply(fn, ...) end

---@class coproc.MapMessagesOptions
---@field depth? integer requests outstanding per worker (2)

---n WorkerResources of one class; the workers are its array part (`#pool`, `pool[i]`).
---@class coproc.WorkerResourcePool
---@field start_kwargs table
---@field [integer] coproc.WorkerResource
local WorkerResourcePool = {}

---Start every worker with start_kwargs overlaid by kwargs. Returns the pool.
---@param kwargs? table
---@return coproc.WorkerResourcePool
function WorkerResourcePool:start(kwargs) end

---Close request to all, then wait; true when all exited.
---@param timeout? number
---@return boolean
function WorkerResourcePool:join(timeout) end

---Terminate every worker (never raises for dead ones).
---@param timeout? number
function WorkerResourcePool:terminate(timeout) end

---All workers are alive.
---@return boolean
function WorkerResourcePool:is_alive() end

---True once every worker has exited (they are not asked to).
---@param timeout? number seconds (nil: no limit)
---@return boolean
function WorkerResourcePool:wait_until_dead(timeout) end

---`for i, worker in pool:workers() do`.
---@return fun(): integer, coproc.WorkerResource
function WorkerResourcePool:workers() end

---Call fn(worker, i) for each worker; returns the results in order.
---@param fn fun(worker: coproc.WorkerResource, i: integer): any
---@return any[]
function WorkerResourcePool:apply_to_workers(fn) end

---Replace the kwargs start uses.
---@param kwargs table
function WorkerResourcePool:set_start_kwargs(kwargs) end

---Send each value of data (a list or an iterator function) as a request and iterate `reply, worker_index` as replies come.
---@param data any[]|fun(): any
---@param channel? coproc.Channel
---@param opts? coproc.MapMessagesOptions
---@return fun(): any, integer
function WorkerResourcePool:map_messages(data, channel, opts) end

---The module; calling it is coproc.Pool.
---@class coproc.pool
---@field PoolClass coproc.Pool The method table of pools.
---@overload fun(n?: integer, opts?: coproc.PoolOptions): coproc.Pool
local pool = {}

---@param n? integer
---@param opts? coproc.PoolOptions
---@return coproc.Pool
function pool.Pool(n, opts) end

---@param n? integer
---@param opts? coproc.LazyPoolOptions
---@return coproc.LazyPool
function pool.LazyPool(n, opts) end

---@param n integer
---@param WorkerClass table|function
---@param start_kwargs? table
---@param opts? coproc.WorkerResourceOptions
---@return coproc.WorkerResourcePool
function pool.WorkerResourcePool(n, WorkerClass, start_kwargs, opts) end

---One round of dispatch and waiting over several pools at once (futures of
---several pools in coproc.wait and coproc.as_completed).
---@param pools coproc.Pool[]
---@param timeout? number
---@return boolean progressed
function pool.pump_many(pools, timeout) end

return pool
