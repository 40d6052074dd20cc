/* l_batch.c: the inner loop of a pool worker, in C, and the status slot
 * that lets the host name the item a dying worker was running.
 *
 *   core.run_batch(f, src, lo, n, star, dst, off, bid, ticket) -> count
 *     for j = 1..n: dst[off + j] = f(src[lo + j - 1])
 *     (f(table.unpack(a, 1, a.n or #a)) with a = src[lo + j - 1] when star),
 *     each item claimed on the batch's ticket first: the loop stops early
 *     (count < n) where the host took the rest back (see lbatch.h).
 *     Errors propagate: the caller runs it under xpcall and asks
 *     core.batch_item() which item raised.
 *   core.batch_item() -> j of the item last started (0 before any), and
 *     the batch's bid (0 outside a batch): what a serving MPI rank reports
 *     when it ends in the middle of a task (there is no shared slot there)
 *   core.batch_done()    the batch is over: the slot says "idle"

 * Before each call the worker's status slot (a word pair in memory shared
 * with the host, see cp_status in l_process.c) records (bid, j). It costs a
 * store per item; a death by signal, os.exit or the OOM killer then still
 * tells the host exactly which item was running. */
#include "lcore.h"
#include "lbatch.h"

static cp_status *g_slot; /* this worker's slot, NULL in a host */
static lua_Integer g_item, g_bid;

/* A plain store on every machine coproc runs on; atomic so that the host,
 * another process, always reads a whole value. */
static inline void put(_Atomic int64_t *w, int64_t v)
{
    atomic_store_explicit(w, v, memory_order_relaxed);
}

void cp_l_batch_set_slot(cp_status *slot)
{
    g_slot = slot;
    g_item = 0;
}

/* Claim item j (1-based) of the batch on ticket t: false when the host has
 * taken it back. */
static int claim(int t, lua_Integer j)
{
    if (t == 0 || !g_slot) return 1;
    _Atomic uint64_t *w = &g_slot->ticket[t];
    uint64_t old = atomic_load(w);
    for (;;) {
        uint64_t claimed = old >> 32, limit = old & 0xffffffffu;
        if (claimed >= limit || (lua_Integer)claimed != j - 1) return 0;
        if (atomic_compare_exchange_weak(w, &old, (claimed + 1) << 32 | limit)) return 1;
    }
}

static int l_run_batch(lua_State *L)
{
    luaL_checkany(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer lo = luaL_checkinteger(L, 3);
    lua_Integer n = luaL_checkinteger(L, 4);
    int star = lua_toboolean(L, 5);
    luaL_checktype(L, 6, LUA_TTABLE);
    lua_Integer off = luaL_checkinteger(L, 7);
    lua_Integer bid = luaL_optinteger(L, 8, 0);
    lua_Integer t = luaL_optinteger(L, 9, 0);
    luaL_argcheck(L, t >= 0 && t <= CP_TICKETS, 9, "no such ticket");
    lua_settop(L, 9);
    if (g_slot) { put(&g_slot->bid, bid); put(&g_slot->item, 0); }
    g_bid = bid;
    lua_Integer j;
    for (j = 1; j <= n; j++) {
        if (!claim((int)t, j)) break;
        g_item = j;
        if (g_slot) put(&g_slot->item, j);
        lua_pushvalue(L, 1);
        lua_rawgeti(L, 2, lo + j - 1);
        int nargs = 1;
        if (star) {
            int a = lua_gettop(L);
            if (!lua_istable(L, a))
                return luaL_error(L, "a starmap item must be a table of arguments, not a %s",
                                  luaL_typename(L, a)); /* the host names the item */
            lua_Integer na;
            lua_pushliteral(L, "n");
            if (lua_rawget(L, a) == LUA_TNUMBER) na = lua_tointeger(L, -1);
            else na = (lua_Integer)lua_rawlen(L, a);
            lua_pop(L, 1);
            if (na < 0 || na > 250) return luaL_error(L, "a starmap item has %I arguments (at most 250)", na);
            luaL_checkstack(L, (int)na + 2, "too many arguments");
            for (lua_Integer k = 1; k <= na; k++) lua_rawgeti(L, a, k);
            lua_remove(L, a);
            nargs = (int)na;
        }
        lua_call(L, nargs, 1);
        lua_rawseti(L, 6, off + j);
    }
    lua_pushinteger(L, j - 1);
    return 1;
}

static int l_batch_item(lua_State *L)
{
    lua_pushinteger(L, g_item);
    lua_pushinteger(L, g_item ? g_bid : 0);
    return 2;
}

static int l_batch_done(lua_State *L)
{
    (void)L;
    g_item = g_bid = 0;
    if (g_slot) { put(&g_slot->bid, 0); put(&g_slot->item, 0); }
    return 0;
}

/* core.claim(ticket, j) -> true when item j may be reported on (it is the
 * next one and the host has not taken it back); for an error found before
 * the item could run (its function or its value cannot be decoded). */
static int l_claim(lua_State *L)
{
    lua_Integer t = luaL_checkinteger(L, 1), j = luaL_checkinteger(L, 2);
    luaL_argcheck(L, t >= 0 && t <= CP_TICKETS, 1, "no such ticket");
    lua_pushboolean(L, claim((int)t, j));
    return 1;
}

void cp_l_batch_open(lua_State *L, int t)
{
    static const luaL_Reg fns[] = {
        {"claim", l_claim},
        {"run_batch", l_run_batch},
        {"batch_item", l_batch_item},
        {"batch_done", l_batch_done},
        {NULL, NULL}
    };
    t = lua_absindex(L, t);
    lua_pushvalue(L, t);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
