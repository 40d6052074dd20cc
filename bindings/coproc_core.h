/* coproc_core.h: the public C API of the coproc.core Lua module. */
#ifndef CP_COPROC_CORE_H
#define CP_COPROC_CORE_H

#include <lua.h>

/* The Lua module entry point: require "coproc.core". */
int luaopen_coproc_core(lua_State *L);

/* Async-signal-safe: ask every blocking coproc wait in this process to stop
 * and raise "interrupted!" (coproc-lua's SIGINT handler calls it). */
void coproc_interrupt(void);

/* Terminate and reap every worker this process started (grace seconds
 * between SIGTERM and SIGKILL). */
void coproc_terminate_all(double grace);

#endif
