/* l_forward.c: core.forward, a relay's step (src/forward.h).
 *
 *   core.forward(dst, src, max_unsent) -> count | nil
 *     moves src's queued messages, as they are, into dst's outbound stream
 *     until dst holds max_unsent bytes unsent (default 256 KiB); nil when
 *     dst is down. Closed messengers raise "attempt to use a closed ...". */
#include "lcore.h"
#include "lmessenger.h"
#include "forward.h"

static cp_messenger *open_arg(lua_State *L, int i)
{
    l_messenger *lm = luaL_checkudata(L, i, CP_MESSENGER_MT);
    if (lm->m.state == CP_M_CLOSED) cp_l_closed(L, CP_MESSENGER_MT);
    return &lm->m;
}

static int l_forward(lua_State *L)
{
    cp_messenger *dst = open_arg(L, 1), *src = open_arg(L, 2);
    lua_Integer max = luaL_optinteger(L, 3, 4 * CP_FLUSH_BYTES);
    luaL_argcheck(L, max > 0, 3, "positive byte count expected");
    luaL_argcheck(L, dst != src, 2, "a messenger cannot forward to itself");
    int n = cp_messenger_forward(dst, src, (size_t)max);
    if (n < 0) lua_pushnil(L);
    else lua_pushinteger(L, n);
    return 1;
}

void cp_l_forward_open(lua_State *L, int t)
{
    t = lua_absindex(L, t);
    lua_pushcfunction(L, l_forward);
    lua_setfield(L, t, "forward");
}
