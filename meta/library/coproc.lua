---@meta coproc
-- LuaCATS definitions of `require "coproc"` for the Lua language server
-- (completion, hover, type checks). Never loaded at run time. The spec
-- tests/spec/meta_spec.lua checks that every name the module exports is
-- described here: a new function, method, option or error class must be
-- added too (the failure names the file and what to add).

---A channel: nil (the default channel), a boolean, an integer or a string of at most 255 bytes.
---@alias coproc.Channel nil|boolean|integer|string

---A function run in a worker: a Lua function (closures go by value with their
---upvalues) or the name of one, `"module.function"` (`"string.upper"`), resolved there.
---@alias coproc.Fn function|string

---@class coproc
---@field _VERSION string "coproc 0.1.0": the version of CMake's project().
---@field PriorityQueue fun(): coproc.PriorityQueue A priority queue (lower first, FIFO among equals).
---@field MultiQueue fun(): coproc.MultiQueue One FIFO per channel.
---@field PriorityMultiQueue fun(): coproc.PriorityMultiQueue One priority queue per channel.
---@field core coproc.core The C module (also `require "coproc.core"`).
---@field null lightuserdata Sent as nil: a hole in an array, a nil inside a table.
---@field Messenger coproc.Messenger The method table of both ends of a connection (for extension in Lua).
---@field PriorityMessenger coproc.MessengerType Messages of a channel come lowest priority first (the default).
---@field MultiMessenger coproc.MessengerType Messages of a channel come in arrival order.
---@field Error coproc.ErrorClass The root of every coproc error class.
---@field ResourceRequestedClose coproc.ErrorClass A close request arrived (or, worker side, the host went away).
---@field WorkerError coproc.ErrorClass The other process raised an error.
---@field WorkerDied coproc.ErrorClass The worker died or closed its connection.
---@field Timeout coproc.ErrorClass A receive or a pool call timed out.
---@field EncodeError coproc.ErrorClass A value cannot be sent.
---@field ProtocolError coproc.ErrorClass A malformed frame or payload arrived.
---@field WorkerIsAlreadyAliveError coproc.ErrorClass `start` of a running worker.
---@field WorkerIsAlreadyDeadError coproc.ErrorClass `terminate` of a worker that is not running.
---@field WorkerIsDeadError coproc.ErrorClass `join` of a worker never started.
---@field Cancelled coproc.ErrorClass A pool future was cancelled, or the pool terminated.
---@field OSError coproc.ErrorClass A system call failed (`errno`, `call`, `path`).
---@field MonitorError coproc.ErrorClass The monitor cannot do what was asked.
---@field Interrupted coproc.ErrorClass Ctrl-C (SIGINT) stopped a wait or the script.
---@field QueueFull coproc.ErrorClass A receive, send or flush would wait while the messenger holds back reading.
---@field CallbackError coproc.ErrorClass A future's done callback raised (raised later by a pool call).
---@field Pool fun(n?: integer, opts?: coproc.PoolOptions): coproc.Pool Loaded on first use (coproc.pool).
---@field LazyPool fun(n?: integer, opts?: coproc.LazyPoolOptions): coproc.LazyPool Loaded on first use (coproc.pool).
---@field WorkerResourcePool fun(n: integer, WorkerClass: table|function, start_kwargs?: table, opts?: coproc.WorkerResourceOptions): coproc.WorkerResourcePool
---@field Monitor coproc.monitor Call it: `coproc.Monitor{...}` makes a coproc.Monitor (loaded on first use).
---@field mpi coproc.mpi Pool and WorkerResource over MPI ranks (loaded on first use; MPI itself only by `-m coproc.mpi`).
local coproc = {}

---Make `defaults` a worker class (`cls.__index = cls`) and return it. Fields are
---defaults of the instances; methods run in the worker, which calls `self:run()`
---(or the instance itself when the class has `__call`). A plain table works as well.
---@generic T: table
---@param defaults? T
---@return T
function coproc.class(defaults) end

---The seed's name of `coproc.class`.
---@generic T: table
---@param defaults? T
---@return T
function coproc.BaseWorkerProcess(defaults) end

---One worker process and its messenger. `target`: a worker class or a
---`function(messenger, kwargs)`. Not started: call `start`.
---@param target table|fun(messenger: coproc.Messenger, kwargs: table)
---@param opts? coproc.WorkerResourceOptions
---@return coproc.WorkerResource
function coproc.WorkerResource(target, opts) end

---True when `err` is a coproc error of class `cls` or of a subclass of it; with no `cls`, any coproc error.
---@param err any
---@param cls? coproc.ErrorClass
---@return boolean
function coproc.is(err, cls) end

---Force a table to travel as an array (an empty table, a table with holes). Returns `t`.
---@generic T: table
---@param t T
---@return T
function coproc.array(t) end

---Force a table to travel as a map. Returns `t`.
---@generic T: table
---@param t T
---@return T
function coproc.map(t) end

---The codec: a value as the msgpack bytes a message would carry. Raises EncodeError.
---@param v any
---@return string
function coproc.encode(v) end

---The value of msgpack bytes made by `coproc.encode`. Raises ProtocolError.
---@param s string
---@return any
function coproc.decode(s) end

---Block until at least one messenger has a message on any channel, or its
---peer died or closed, or `timeout` seconds passed (then `{}`). Returns those
---ready, in list order.
---@param messengers coproc.Messenger[]
---@param timeout? number seconds; nil: forever
---@return coproc.Messenger[]
function coproc.wait(messengers, timeout) end

---The futures as they finish, each once; raises Timeout for the whole loop.
---@param futures coproc.Future[]
---@param timeout? number seconds
---@return fun(): coproc.Future
function coproc.as_completed(futures, timeout) end

---Wait that long with every messenger still reading and writing; Ctrl-C
---ends it early with coproc.Interrupted.
---@param seconds number
function coproc.sleep(seconds) end

---The values of a generic for as one argument for the pool calls (so options may follow):
---`pool:imap(fn, coproc.iter(io.lines(path)), opts)`.
---@param f function the iterator
---@param state? any
---@param control? any
---@param closing? any closed when the pool is done with the iterator
---@return table
function coproc.iter(f, state, control, closing) end

---The number of CPUs this process may run on.
---@return integer
function coproc.cpu_count() end

---This process's pid.
---@return integer
function coproc.getpid() end

---Monotonic seconds (for durations).
---@return number
function coproc.now() end

---Make this process's malloc keep large blocks (glibc: no block mapped on its own, the top
---of the heap kept up to 256 MiB, huge pages advised for blocks of 4 MiB or more), so large
---messages land in memory already paged in instead of fresh pages (docs/api.md, "Memory"). coproc-lua and coproc's workers do this
---by default (`COPROC_MALLOC=off` stops them); a host that loads coproc into another
---interpreter only when it calls this or runs with `COPROC_MALLOC=keep`. Memory freed
---stays with the process. Returns false when the C library has no such settings.
---@return boolean
function coproc.tune_malloc() end

---Run `fn(...)` as a task of coproc's scheduler (docs/eventloops.md): inside it every
---coproc call that would wait (a receive, `coproc.wait`, `flush`, a future's `result`,
---`coproc.sleep`) yields to the scheduler, which waits for all its tasks at once. The task
---runs from the next `coproc.run_all()` (or `task:result()` outside a task).
---@param fn function
---@param ... any its arguments
---@return coproc.Task
function coproc.async(fn, ...) end

---Run the scheduler until every task has ended. A task's error that no `task:result()`
---asked for is raised once no task can run. Raises Timeout after `timeout` seconds.
---Inside a task: waits until every other task has ended.
---@param timeout? number seconds; nil: no limit
function coproc.run_all(timeout) end

---Wait `seconds`: inside a task (or another scheduler's coroutine) it yields; elsewhere
---it blocks while the messengers go on reading and writing (Ctrl-C interrupts).
---@param seconds number
function coproc.sleep(seconds) end

---Write the output every messenger of this process holds back (corked bursts) as far as
---the sockets take it: what a hand-rolled event loop calls before it sleeps.
function coproc.flush_all() end

---A task of coproc's scheduler (`coproc.async`).
---@class coproc.Task
---@field traceback? string The task's traceback, once it failed.
local Task = {}

---The task's results once it has ended; raises its error, or Cancelled. Inside a task
---it waits there (the others run); outside it runs the scheduler until this task ends.
---Raises Timeout after `timeout` seconds (the task goes on).
---@param timeout? number
---@return any ...
function Task:result(timeout) end

---True once the task returned, failed or was cancelled.
---@return boolean
function Task:done() end

---Stop a task that has not ended (its coroutine is closed; result() raises Cancelled).
---False when it had ended, or is the running task.
---@return boolean
function Task:cancel() end

---What a message-level receive gives.
---@class coproc.Message
---@field data any The payload.
---@field channel coproc.Channel The channel it came on.
---@field is_request boolean Sent with send_request: it expects a reply.
---@field is_reply boolean Sent with send_reply.
---@field priority? number Its priority (math.huge when none was given); nil on a MultiMessenger.

---@class coproc.MessengerType
---@field name "PriorityMessenger"|"MultiMessenger"
---@field fifo boolean

---@class coproc.WorkerResourceOptions
---@field method? "fresh"|"inherit" "fresh" (default): a new Lua state, target and kwargs copied by value; "inherit": the child goes on in its copy of the host's state (any value works, nothing is encoded).
---@field messenger_type? coproc.MessengerType coproc.PriorityMessenger (default) or coproc.MultiMessenger.

---One worker process and its messenger (`<close>` terminates it).
---@class coproc.WorkerResource
---@field messenger coproc.Messenger The host's end of the connection (set by start).
---@field target table|function
---@field method "fresh"|"inherit"
---@field messenger_type coproc.MessengerType
local WorkerResource = {}

---Fork the worker; `kwargs` become fields of the worker instance. Returns self.
---Raises WorkerIsAlreadyAliveError if running; EncodeError (fresh) when the target or kwargs cannot be sent.
---@param kwargs? table
---@return coproc.WorkerResource
function WorkerResource:start(kwargs) end

---Wait for the worker to exit on its own; true when it has. Raises WorkerIsDeadError if never started.
---@param timeout? number seconds; nil: forever
---@return boolean
function WorkerResource:join(timeout) end

---Close request, `timeout` seconds (default 1) for a clean exit, then SIGTERM, 0.5 s, SIGKILL; reaps and
---closes the messenger. Raises WorkerIsAlreadyDeadError if not running.
---@param timeout? number
function WorkerResource:terminate(timeout) end

---Like terminate, but never raises (for a worker that may have died).
---@param timeout? number
function WorkerResource:close(timeout) end

---@return boolean
function WorkerResource:is_alive() end

---@return integer? pid nil before start
function WorkerResource:pid() end

---The exit code once exited; `nil, signal` when killed; nothing while running.
---@return integer? code
---@return integer? signal
function WorkerResource:exitcode() end

---Stop the worker (as terminate) and start it again, with kwargs (nil: those of the last start).
---@param kwargs? table
---@param timeout? number seconds before SIGTERM
---@return coproc.WorkerResource self
function WorkerResource:reset_process(kwargs, timeout) end

---True once the resource was started (as the Python coproc).
---@return boolean
function WorkerResource:process_exists() end

---One end of a worker connection (both ends have the same methods). Priorities:
---lower first; when omitted, `data.priority` if data is a table with a numeric
---`priority`, else +inf; FIFO among equals.
---@class coproc.Messenger
local Messenger = {}

---Send a message that expects a reply (counts in `requests_sent(channel)`).
---@param data any
---@param channel? coproc.Channel
---@param priority? number
function Messenger:send_request(data, channel, priority) end

---Send a reply (counts in the other side's `replies_received(channel)`).
---@param data any
---@param channel? coproc.Channel
---@param priority? number
function Messenger:send_reply(data, channel, priority) end

---Send a message that expects nothing.
---@param data any
---@param channel? coproc.Channel
---@param priority? number
function Messenger:send_norequest(data, channel, priority) end

---`send_request` for each item of `list`.
---@param list any[]
---@param channel? coproc.Channel
---@param priority? number
function Messenger:send_request_multiple(list, channel, priority) end

---One request whose data is the array `head[1..#head], list[lo..hi]`, encoded straight from the two tables.
---@param head any[]
---@param list any[]
---@param lo integer
---@param hi integer
---@param channel? coproc.Channel
---@param priority? number
function Messenger:send_request_slice(head, list, lo, hi, channel, priority) end

---One reply whose data is the array `head[1..#head], list[lo..hi]` (nils kept), encoded straight from the two tables.
---@param head any[]
---@param list any[]
---@param lo integer
---@param hi integer
---@param channel? coproc.Channel
---@param priority? number
function Messenger:send_reply_slice(head, list, lo, hi, channel, priority) end

---The other side's next receive raises ResourceRequestedClose.
function Messenger:send_close_request() end

---The other side's next receive raises WorkerError with `err`'s message and `err.traceback`.
---@param err any
function Messenger:send_error(err) end

---Block until everything sent is written (reading meanwhile); false on timeout.
---@param timeout? number
---@return boolean
function Messenger:flush(timeout) end

---The next message of `channel`; raises Timeout after `timeout` seconds, WorkerDied
---(host side) when the worker is gone, ResourceRequestedClose on a close request.
---Also `m:receive_blocking{channel = 2, timeout = 5}`. In a task it yields.
---@param channel? coproc.Channel|coproc.ReceiveOptions
---@param timeout? number seconds; nil: forever
---@return any
function Messenger:receive_blocking(channel, timeout) end

---`receive_blocking` as one options table: `m:receive_blocking{channel = 2, timeout = 5}`.
---@class coproc.ReceiveOptions
---@field channel? coproc.Channel
---@field timeout? number seconds

---The next message of `channel` as a message table (data, channel, is_request, is_reply,
---priority); raises as receive_blocking does. Also `m:receive_message_blocking{channel =, timeout =}`.
---@param channel? coproc.Channel|coproc.ReceiveOptions
---@param timeout? number seconds; nil: forever
---@return coproc.Message
function Messenger:receive_message_blocking(channel, timeout) end

---receive_blocking that returns its runtime failures instead of raising them: the value,
---or `nil, err` (Timeout, WorkerDied, ResourceRequestedClose, WorkerError, QueueFull,
---ProtocolError). Waits at most `timeout` seconds (default 0: only what has arrived).
---Misuse and Ctrl-C still raise. Also `m:try_receive{channel =, timeout =}`.
---@param channel? coproc.Channel|coproc.ReceiveOptions
---@param timeout? number seconds; default 0
---@return any value
---@return coproc.Error? err
function Messenger:try_receive(channel, timeout) end

---Every message of `channel` there now, as message tables, with `.n`; never blocks.
---@param channel? coproc.Channel
---@return coproc.Message[]
function Messenger:receive_available_messages(channel) end

---Iterate the messages of `channel` (replies and any others) until `remaining(channel)` is 0:
---`for msg, i in m:receive_remaining_messages(ch) do`.
---@param channel? coproc.Channel
---@return fun(): coproc.Message, integer
function Messenger:receive_remaining_messages(channel) end

---Two connected messengers in this process (as the seed's tests use).
---@param opts? { messenger_type?: coproc.MessengerType }
---@return coproc.Messenger a
---@return coproc.Messenger b
function Messenger.new_pair(opts) end

---No argument: a message is queued (any channel) or output is still unsent (luasocket's
---`dirty()`). With a channel: a receive on it would not wait (a message of it, a close
---request or error, the connection down). Writes what the socket takes first.
---@param channel? coproc.Channel
---@return boolean
function Messenger:pending(channel) end

---cqueues' pollable protocol: the fd to poll (as fileno()).
---@return integer
function Messenger:pollfd() end

---cqueues' pollable protocol: "r", or "rw" while output is unsent (after writing what the socket takes).
---@return "r"|"rw"
function Messenger:events() end

---cqueues' pollable protocol: 0 while a message is queued or the connection is down (the
---socket may be quiet then), else nil.
---@return number?
function Messenger:timeout() end

---`receive_blocking` without the decode: the payload's msgpack bytes (the pool's workers decode them item by item).
---@param channel? coproc.Channel
---@param timeout? number
---@return string
function Messenger:receive_raw(channel, timeout) end

---Every message of `channel` there now, with `.n` (nil values are holes); never blocks.
---@param channel? coproc.Channel
---@return any[]
function Messenger:receive_available(channel) end

---Iterate the replies of `channel` until `remaining(channel)` is 0:
---`for reply, i in m:receive_remaining(ch) do`; a nil reply comes as `coproc.null`.
---@param channel? coproc.Channel
---@return fun(): any, integer
function Messenger:receive_remaining(channel) end

---A message of `channel` is there now.
---@param channel? coproc.Channel
---@return boolean
function Messenger:available(channel) end

---Wait until any channel has a message; false on timeout.
---@param timeout? number
---@return boolean
function Messenger:await_available(timeout) end

---Unread bytes are waiting on the socket.
---@param timeout? number
---@return boolean
function Messenger:pipe_poll(timeout) end

---Requests sent on `channel` without a reply yet.
---@param channel? coproc.Channel
---@return integer
function Messenger:remaining(channel) end

---@param channel? coproc.Channel
---@return integer
function Messenger:requests_sent(channel) end

---@param channel? coproc.Channel
---@return integer
function Messenger:replies_received(channel) end

---@param channel? coproc.Channel
---@return integer
function Messenger:requests_received(channel) end

---@param channel? coproc.Channel
---@return integer
function Messenger:replies_sent(channel) end

---Messages received and not yet taken, of `channel` (no argument: all channels).
---@param channel? coproc.Channel
---@return integer
function Messenger:queue_size(channel) end

---@return integer
function Messenger:messages_sent() end

---@return integer
function Messenger:messages_received() end

---The socket's file descriptor.
---@return integer
function Messenger:fileno() end

---Close this end (idempotent).
function Messenger:close() end

---@return boolean
function Messenger:is_closed() end

---The other end is still there.
---@return boolean
function Messenger:is_connected() end

---The largest frame accepted (default 512 MiB; 64 .. 2^32-1).
---@param bytes integer
function Messenger:set_max_frame(bytes) end

---The longest wait for room in a send (nil: no limit, the default; 0: never wait); then Timeout.
---@param seconds? number
function Messenger:set_send_timeout(seconds) end

---@return number? seconds
function Messenger:send_timeout() end

---Bytes sent but not yet taken by the socket: a peer that is not reading shows here.
---@return integer
function Messenger:unsent() end

---The bound on bytes queued for reading (default 64 MiB, nil for none): past it the messenger stops reading its socket.
---@param bytes? integer
function Messenger:set_max_queued(bytes) end

---@return integer? bytes
function Messenger:max_queued() end

---What the queued messages occupy.
---@return integer
function Messenger:queued_bytes() end

---What a receive on this end accepts: "code" (functions, metatables and names
---travel) or "data" (they are refused with ProtocolError); docs/protocol.md, Trust.
---@param mode "code"|"data"
function Messenger:set_trust(mode) end

---@return "code"|"data"
function Messenger:trust() end

---Every error coproc raises: `tostring(err)` is one line, "Class: message".
---@class coproc.Error
---@field class coproc.ErrorClass
---@field message string
---@field traceback? string

---An error class: `Class(message, fields)` makes an error object; `coproc.is` follows `parent`.
---@class coproc.ErrorClass
---@field name string
---@field parent? coproc.ErrorClass
---@overload fun(message?: string, fields?: table): coproc.Error

---@class coproc.ResourceRequestedClose: coproc.Error

---@class coproc.WorkerError: coproc.Error
---@field remote_message string The worker's own message.
---@field traceback string The worker's traceback.
---@field pid? integer
---@field remote_class? string The class name when the worker raised a coproc error.
---@field index? integer The failing item (pools).
---@field value? any The error value when it was not a string and could be sent (pools).

---@class coproc.WorkerDied: coproc.Error
---@field pid integer
---@field exitcode? integer
---@field signal? integer
---@field unanswered integer Requests without a reply over all channels.
---@field index? integer The item that was running (pools).

---@class coproc.Timeout: coproc.Error
---@field unsent? integer (a send) bytes still unsent
---@field timeout? number (a send) the send timeout

---@class coproc.EncodeError: coproc.Error
---@field index? integer The item that could not be sent (pools).

---@class coproc.ProtocolError: coproc.Error

---@class coproc.WorkerIsAlreadyAliveError: coproc.Error

---@class coproc.WorkerIsAlreadyDeadError: coproc.Error

---@class coproc.WorkerIsDeadError: coproc.Error

---@class coproc.Cancelled: coproc.Error

---@class coproc.OSError: coproc.Error
---@field errno? integer
---@field call? string The system call (or library call) that failed.
---@field path? string The file, when the call was about one.

---@class coproc.Interrupted: coproc.Error

---@class coproc.CallbackError: coproc.Error
---@field value any What the callback raised.
---@field traceback? string Where it raised it.
---@field future coproc.Future The future whose callback it was.

---@class coproc.QueueFull: coproc.Error
---@field channel coproc.Channel the channel that holds the bytes
---@field messages integer
---@field bytes integer
---@field limit integer

---@class coproc.MonitorError: coproc.Error
---@field pid? integer
---@field path? string
---@field cause? string

---The C module `coproc.core`. Besides what `coproc` re-exports, only the
---functions below are meant for use; the others are the Lua modules' plumbing.
---@class coproc.core
---@field version string The version of CMake's project() (e.g. "0.1.0").
---@field null lightuserdata
---@field Messenger coproc.Messenger
---@field array fun(t: table): table
---@field map fun(t: table): table
---@field encode fun(v: any): string
---@field decode fun(s: string): any
---@field decode_into fun(s: string, t: table?, base: integer, first: integer, limit?: integer, opts?: table): ... Decode an array: elements 1..first-1 returned (then the count), the others stored at t[base + i]; nil, bad_index, message on failure.
---@field wait fun(messengers: coproc.Messenger[], timeout?: number): coproc.Messenger[]
---@field cpu_count fun(): integer
---@field getpid fun(): integer
---@field now fun(): number
---@field tune_malloc fun(): boolean As coproc.tune_malloc.
---@field table_new fun(narray: integer, nhash: integer): table A table with room reserved (lua_createtable).
---@field isatty fun(fd: integer): boolean
---@field set_waiter fun(fn?: fun(request: coproc.WaitRequest): boolean, co?: thread): function? The waiter of coroutine `co` (nil: the default for all coroutines); returns the previous one (docs/eventloops.md).
---@field waiter fun(): function? The waiter of the running coroutine, or nil.
---@field flush_all fun() As coproc.flush_all.
---@field on_close fun(m: coproc.Messenger, fn: fun(m: coproc.Messenger)) fn(m) runs once when m is closed, before its fd (close() or <close>).
---@field arrivals fun(): integer Messages queued so far by all messengers of the process.

---What a coproc call that has to wait tells a waiter (docs/eventloops.md).
---@class coproc.WaitRequest
---@field messenger? coproc.Messenger
---@field channel? coproc.Channel with `messenger`: a message of this channel
---@field any? boolean with `messenger`: anything queued on it
---@field write? boolean with `messenger`: all its output written
---@field messengers? coproc.Messenger[] any of them has something
---@field pools? coproc.Pool[] a worker of one of them has something
---@field ready? fun(): boolean true once the wait can end
---@field timeout? number seconds at most

---The Python coproc's queues as plain data structures (coproc.queues).
---@class coproc.PriorityQueue
local PriorityQueue = {}
---@param item any
---@param priority? number lower comes out first (nil: +inf)
function PriorityQueue:put(item, priority) end
---The first item and its priority (a Lua error when empty).
---@return any item
---@return number priority
function PriorityQueue:get() end
---@return any item
---@return number priority
function PriorityQueue:peek() end
---@return integer
function PriorityQueue:size() end
---@return boolean
function PriorityQueue:empty() end
---Every item in order (the queue is then empty).
---@return table
function PriorityQueue:get_all() end
function PriorityQueue:clear() end

---@class coproc.MultiQueue
local MultiQueue = {}
---@param item any
---@param channel? any
function MultiQueue:put(item, channel) end
---@param channel? any
---@return any
function MultiQueue:get(channel) end
---@param channel? any
---@return any
function MultiQueue:peek(channel) end
---Items of that channel, or of all channels without an argument.
---@param channel? any
---@return integer
function MultiQueue:size(channel) end
---@param channel? any
---@return boolean
function MultiQueue:empty(channel) end
---@param channel? any
---@return table
function MultiQueue:get_all(channel) end
---@return any[]
function MultiQueue:channels() end
function MultiQueue:clear() end

---@class coproc.PriorityMultiQueue: coproc.MultiQueue
local PriorityMultiQueue = {}
---@param item any
---@param channel? any
---@param priority? number
function PriorityMultiQueue:put(item, channel, priority) end

return coproc
