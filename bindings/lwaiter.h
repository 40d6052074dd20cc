/* lwaiter.h: coproc waits inside coroutines that a scheduler runs.
 *
 * A coproc call that has to wait (a receive, coproc.wait, flush, sleep, a
 * pool wait) first asks for the *waiter* of the running coroutine: a Lua
 * function a scheduler registered with core.set_waiter, for that coroutine
 * or as the default for every coroutine. Only a yieldable coroutine has
 * one (the main thread never does, so blocking there is unchanged). The
 * call then builds a request table (what it waits for, see
 * docs/eventloops.md) and calls waiter(request) with lua_callk: the waiter
 * yields to its scheduler, which resumes it once the request may be met
 * (or its timeout passed), and returns true; the call goes on in its
 * continuation and looks again (a wake-up may be early). A waiter that
 * returns false declines (not in its scheduler's coroutine): the call
 * blocks as it would without one. */
#ifndef CP_LWAITER_H
#define CP_LWAITER_H

#include <lua.h>

/* [-0, +(0|1), m] Push the waiter of the running coroutine and return 1, or
 * push nothing and return 0 (not yieldable, or no waiter). */
int  cp_l_waiter_push(lua_State *L);

/* [-0, +1, m] Push a request table: messenger = the value at index mi (0:
 * none), channel = the value at ci (0: none), mode "r" (a channel), "a"
 * (any channel: any = true) or "w" (output to drain: write = true),
 * messengers = the value at li (0: none), timeout = timeout (< 0: no
 * field). */
void cp_l_push_request(lua_State *L, int mi, int ci, char mode, int li, double timeout);

#endif
