/* coproc_core.h: internal, not a public C API. The contract between the
 * bindings and the coproc-lua interpreter (bindings/coproc_lua.c), which links them in
 * statically. Not installed: coproc/core.so exports luaopen_coproc_core
 * alone (what `require` needs) and keeps the other two hidden. A program
 * that embeds Lua uses coproc through `require "coproc"`; why there is no C
 * API (yet) is in docs/design-notes.md. */
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
