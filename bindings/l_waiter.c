/* l_waiter.c: waiters (see lwaiter.h) and what schedulers wait with.
 *
 *   core.set_waiter(fn, co)   fn for coroutine co (nil: the default for all
 *                             coroutines); fn nil removes. Returns the previous one.
 *   core.waiter()             the waiter of the running coroutine, or nil
 *   core.wait_for(conds, n, t)  coproc's scheduler's one wait: conds is a flat
 *                             list of n (messenger, channel, mode) triples (a
 *                             nil channel leaves a hole: hence n), mode
 *                             "r" (a message of that channel, a close request
 *                             or error, the connection down, or reading held
 *                             back), "a" (anything queued or down) or "w" (all
 *                             output written, or down); returns the list of the
 *                             triple numbers (1, 2, ...) that are ready, {} when
 *                             t seconds (nil: no limit) passed first
 *   core.sleep(t)             block t seconds, the messengers still flowing
 *   core.flush_all()          write the pending output of every messenger
 *   core.arrivals()           messages queued so far by all messengers (and
 *                             closes, and progress noted)
 *   core.note_progress()      a wait may end without a message (a pool job ended)
 *
 * Interrupts (Ctrl-C) raise coproc.Interrupted from wait_for and sleep. */
#include "lcore.h"
#include "lmessenger.h"
#include "lwaiter.h"
#include "loop.h"

#include <math.h>

static const char WAITERS = 'w';     /* registry[&WAITERS]: thread -> fn, weak keys */
static const char DEFAULT_KEY = 'd'; /* waiters[&DEFAULT_KEY]: the default waiter */

/* [-0, +1, m] The waiter table, made on first use. */
static void push_waiters(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &WAITERS) == LUA_TTABLE) return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 4);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &WAITERS);
}

int cp_l_waiter_push(lua_State *L)
{
    if (!lua_isyieldable(L)) return 0;
    luaL_checkstack(L, 4, NULL);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &WAITERS) != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushthread(L);
    if (lua_rawget(L, -2) != LUA_TFUNCTION) {
        lua_pop(L, 1);
        if (lua_rawgetp(L, -1, &DEFAULT_KEY) != LUA_TFUNCTION) {
            lua_pop(L, 2);
            return 0;
        }
    }
    lua_remove(L, -2);
    return 1;
}

void cp_l_push_request(lua_State *L, int mi, int ci, char mode, int li, double timeout)
{
    luaL_checkstack(L, 3, NULL);
    lua_createtable(L, 0, 4);
    if (mi) { lua_pushvalue(L, mi); lua_setfield(L, -2, "messenger"); }
    if (ci) { lua_pushvalue(L, ci); lua_setfield(L, -2, "channel"); }
    if (mode == 'a') { lua_pushboolean(L, 1); lua_setfield(L, -2, "any"); }
    if (mode == 'w') { lua_pushboolean(L, 1); lua_setfield(L, -2, "write"); }
    if (li) { lua_pushvalue(L, li); lua_setfield(L, -2, "messengers"); }
    if (timeout >= 0) { lua_pushnumber(L, timeout); lua_setfield(L, -2, "timeout"); }
}

static int l_set_waiter(lua_State *L)
{
    if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTHREAD);
    lua_settop(L, 2);
    push_waiters(L);
    if (lua_isnil(L, 2)) lua_rawgetp(L, 3, &DEFAULT_KEY);
    else { lua_pushvalue(L, 2); lua_rawget(L, 3); }
    lua_pushvalue(L, 1);
    if (lua_isnil(L, 2)) lua_rawsetp(L, 3, &DEFAULT_KEY);
    else { lua_pushvalue(L, 2); lua_insert(L, -2); lua_rawset(L, 3); }
    return 1; /* the previous one */
}

static int l_waiter(lua_State *L)
{
    if (!cp_l_waiter_push(L)) lua_pushnil(L);
    return 1;
}

static double opt_seconds(lua_State *L, int i)
{
    if (lua_isnoneornil(L, i)) return -1;
    double t = luaL_checknumber(L, i);
    if (isnan(t) || t < 0) luaL_argerror(L, i, "timeout must be a non-negative number or nil");
    return t;
}

typedef struct cond { cp_messenger *m; cp_chan *c; char mode; } cond;
typedef struct condset { cond *v; int n; } condset;

static int cond_ready(const cond *k)
{
    const cp_messenger *m = k->m;
    if (m->state == CP_M_CLOSED) return 1;
    switch (k->mode) {
    case 'a': return cp_messenger_ready_any(m);
    case 'w': return m->state != CP_M_OPEN || cp_messenger_unsent(m) == 0 || cp_messenger_held(m);
    default:  return cp_messenger_ready(m, k->c);
    }
}

static int any_ready(void *ud)
{
    condset *s = ud;
    for (int i = 0; i < s->n; i++)
        if (cond_ready(&s->v[i])) return 1;
    return 0;
}

static int l_wait_for(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer nt = luaL_checkinteger(L, 2);
    luaL_argcheck(L, nt >= 0 && nt <= 1 << 20, 2, "count of triples out of range");
    double timeout = opt_seconds(L, 3);
    int n = (int)nt;
    lua_settop(L, 2);
    cond *v = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *v, 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, 3 * i + 1);
        cp_messenger *m = &cp_l_messenger_at(L, -1)->m;
        lua_rawgeti(L, 1, 3 * i + 3);
        const char *mode = lua_tostring(L, -1);
        if (!mode || (mode[0] != 'r' && mode[0] != 'a' && mode[0] != 'w') || mode[1])
            return luaL_error(L, "bad argument #1 to 'wait_for' (mode of triple %d must be 'r', 'a' or 'w')", i + 1);
        v[i].m = m;
        v[i].mode = mode[0];
        v[i].c = NULL;
        lua_rawgeti(L, 1, 3 * i + 2);
        if (v[i].mode == 'r' && m->state != CP_M_CLOSED) v[i].c = cp_l_messenger_chan(L, m, lua_gettop(L), 1);
        lua_pop(L, 3);
    }
    cp_messenger_flush_all();
    condset s = {v, n};
    int rc = cp_loop_wait(any_ready, &s, timeout);
    if (rc == -1) return cp_l_error(L, "Interrupted", "interrupted!");
    lua_createtable(L, rc > 0 ? 1 : 0, 0);
    lua_Integer k = 0;
    if (rc > 0)
        for (int i = 0; i < n; i++)
            if (cond_ready(&v[i])) { lua_pushinteger(L, i + 1); lua_rawseti(L, -2, ++k); }
    return 1;
}

/* flush_all([timeout]): write what every messenger holds back; with a
 * timeout, wait up to that long until it is written -> true, or false. */
static int l_flush_all(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        cp_messenger_flush_all();
        return 0;
    }
    double t = luaL_checknumber(L, 1);
    luaL_argcheck(L, t >= 0 && !isnan(t), 1, "timeout must be a non-negative number");
    lua_pushboolean(L, cp_messenger_flush_all_wait(isinf(t) ? -1 : t));
    return 1;
}

static int l_note_progress(lua_State *L)
{
    (void)L;
    cp_messenger_note_progress();
    return 0;
}

static int l_arrivals(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)cp_messenger_arrivals());
    return 1;
}

void cp_l_waiter_open(lua_State *L, int t)
{
    static const luaL_Reg fns[] = {
        {"set_waiter", l_set_waiter},
        {"waiter", l_waiter},
        {"wait_for", l_wait_for},
        {"flush_all", l_flush_all},
        {"arrivals", l_arrivals},
        {"note_progress", l_note_progress},
        {NULL, NULL},
    };
    t = lua_absindex(L, t);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, t, f->name);
    }
}
