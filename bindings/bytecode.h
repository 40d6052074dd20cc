/* bytecode.h: loading a function's bytecode that came from a peer.
 *
 * lua_load trusts a binary chunk's structure: declared sizes are allocated
 * before the bytes behind them are read (a 179-byte chunk can make it reserve
 * and clear gigabytes), and Lua 5.4.4 writes past a block when a chunk lists
 * more upvalue names than upvalues. So a chunk is first walked here, every
 * count checked against the bytes that are left and against each other, and
 * only a chunk that passes is given to lua_load, under an allocation budget
 * proportional to its size.
 *
 * What this does not check is the code itself: running a loaded function
 * with crafted instructions can still crash the process. That is why code
 * is accepted only from a peer in trust mode "code" (docs/protocol.md). */
#ifndef CP_BYTECODE_H
#define CP_BYTECODE_H

#include <stddef.h>
#include <lua.h>

/* Deepest nesting of function prototypes accepted (Lua's own parser stops
 * at 200 nested functions). */
#define CP_BYTECODE_MAX_NEST 200

/* [-0, +0, -] Check that b[0..n) is a whole binary chunk of this Lua build
 * whose structure lua_load can read safely. Returns 0, or -1 with a reason
 * in err ("declared 1000000 constants but 12 bytes are left"). */
int cp_bytecode_check(lua_State *L, const char *b, size_t n, char *err, size_t errlen);

/* [-0, +(0|1), -] Check, then lua_load (mode "b") under an allocation budget
 * of CP_BYTECODE_BUDGET(n) bytes. Pushes the function and returns 0, or
 * pushes nothing and returns -1 with the reason in err. The state's
 * allocator is restored on every path. */
int cp_bytecode_load(lua_State *L, const char *b, size_t n, const char *chunkname,
                     char *err, size_t errlen);

#define CP_BYTECODE_BUDGET(n) ((n) * 64 + (1u << 20))

#endif
