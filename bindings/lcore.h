/* lcore.h: what the binding files share: the registration hook of each
 * Lua-visible part of coproc.core, and coproc error raising. */
#ifndef CP_LCORE_H
#define CP_LCORE_H

#include <lua.h>
#include <lauxlib.h>

/* [-0, +1, m] Build the coproc.core module table (core.c). */
int  cp_core_open(lua_State *L);

/* Each binding file adds its functions/types to the module table at index t. */
void cp_l_codec_open(lua_State *L, int t);
void cp_l_messenger_open(lua_State *L, int t);
void cp_l_process_open(lua_State *L, int t);
/* Seconds between SIGTERM and SIGKILL for the workers a process still has
 * when it ends (a host's exit, a worker's end). */
#define CP_EXIT_GRACE 0.5

void cp_l_spawn_open(lua_State *L, int t);
void cp_l_pollproxy_open(lua_State *L, int t);
void cp_l_system_open(lua_State *L, int t);
void cp_l_clock_open(lua_State *L, int t);
void cp_l_monitor_open(lua_State *L, int t);
void cp_l_batch_open(lua_State *L, int t);
void cp_l_waiter_open(lua_State *L, int t);
void cp_l_forward_open(lua_State *L, int t);

/* [-0, +0, m] (core.c) package.preload["coproc.core"] = cp_core_open: a state that
 * has coproc built in (coproc-lua, a fresh worker) never loads a second
 * copy from coproc/core.so. */
void cp_l_preload_core(lua_State *L);

/* [-0, +0, -] (core.c) math.randomseed from the pid and the clock: two fresh
 * states made within a second (workers, ranks) must not share a seed. */
void cp_l_reseed(lua_State *L);

/* Message handler for lua_pcall: the error (a string, or an object with
 * __tostring such as coproc's errors) plus a traceback; an error that came
 * from another process (a field traceback, as WorkerError has) gets that
 * traceback too, under "worker traceback:". */
int  cp_l_msghandler(lua_State *L);

/* [-0, +0, m] The one way a Lua-visible type is made (liolib's createmeta):
 * metatable tname (so argument errors name it), the metamethods in meta set
 * on it, the methods in their own table as __index. Every method gets the
 * metatable as upvalue 1 (cp_l_isclass: a type check without a registry
 * lookup), then the nup values on top of the stack, which are popped. A
 * second call (busted re-requires) finds the metatable and only pops. */
void cp_l_newclass(lua_State *L, const char *tname, const luaL_Reg *methods,
                   const luaL_Reg *meta, int nup);
/* True when the value at i has the metatable held in upvalue 1 of the
 * running method (see cp_l_newclass). */
int  cp_l_isclass(lua_State *L, int i);
/* Raise "attempt to use a closed <tname>". */
int  cp_l_closed(lua_State *L, const char *tname);

/* Registry field holding the error factory (a string key: coproc.core and
 * coproc.plot each link a copy of lcore.c and must find the same one). */
#define CP_L_ERROR_FACTORY "coproc.error_factory"

/* [-0, +1, m] Push a coproc error object of class cls (e.g. "WorkerDied")
 * with a formatted message. Extra fields can be set on it before raising.
 * The object is made by the Lua constructor registered with
 * core.set_error_factory (lua/coproc/errors.lua); before that, a plain table
 * {class = cls, message = msg}. */
void cp_l_pusherror(lua_State *L, const char *cls, const char *fmt, ...);
/* Push the error and raise it. Never returns. */
int  cp_l_error(lua_State *L, const char *cls, const char *fmt, ...);
/* Raise the error object on top of the stack, after it passed through the
 * factory (call after setting extra fields on a cp_l_pusherror table). */
int  cp_l_raise(lua_State *L);
/* [-1, +1, m] The same without raising: the finished error object replaces
 * the table on top (for calls that return nil, err instead). */
void cp_l_finish_error(lua_State *L);
/* Raise an OSError {message = "<formatted>: strerror(err)", errno = err,
 * call = the system call or operation that failed}. Never returns. */
int  cp_l_oserror(lua_State *L, int err, const char *call, const char *fmt, ...);

#endif
