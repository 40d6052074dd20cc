/* l_proctrack.c: coproc.ProcTrack, the sampled process set of the monitor
 * worker (src/proctrack.h), as core.monitor.proctrack(). */
#include "lmonitor.h"
#include "proctrack.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define TRACK_MT "coproc.ProcTrack"

typedef struct {
    cp_proctrack t;
    cp_procsample *out;
    size_t outcap;
    int open;
} l_track;

/* For methods (the metatable is their upvalue 1, see cp_l_newclass). */
static l_track *check(lua_State *L)
{
    if (!cp_l_isclass(L, 1)) luaL_typeerror(L, 1, TRACK_MT);
    l_track *p = lua_touserdata(L, 1);
    if (!p->open) cp_l_closed(L, TRACK_MT);
    return p;
}

/* close(), __close and __gc: idempotent. */
static int track_close(lua_State *L)
{
    l_track *p = luaL_checkudata(L, 1, TRACK_MT);
    if (p->open) {
        cp_proctrack_free(&p->t);
        free(p->out);
        p->out = NULL;
        p->outcap = 0;
        p->open = 0;
    }
    return 0;
}

/* core.monitor.proctrack(root, include_children, prune) --> ProcTrack.
 * Raises OSError (errno ESRCH) when root does not exist. */
static int l_proctrack(lua_State *L)
{
    lua_Integer root = luaL_checkinteger(L, 1);
    int children = lua_toboolean(L, 2);
    lua_Integer prune = luaL_optinteger(L, 3, 0);
    luaL_argcheck(L, root > 0, 1, "pid must be positive");
    l_track *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p); /* born closed */
    luaL_setmetatable(L, TRACK_MT);
    if (cp_proctrack_init(&p->t, (pid_t)root, children, (pid_t)prune) < 0) {
        int e = errno;
        lua_pushfstring(L, "no process with pid %d", (int)root);
        if (e == ESRCH) {
            cp_l_pusherror(L, "OSError", "%s", lua_tostring(L, -1));
            lua_pushinteger(L, e);
            lua_setfield(L, -2, "errno");
            lua_pushliteral(L, "proctrack");
            lua_setfield(L, -2, "call");
            lua_pushinteger(L, root);
            lua_setfield(L, -2, "pid");
            return cp_l_raise(L);
        }
        return cp_l_oserror(L, e, "proctrack", "tracking pid %d", (int)root);
    }
    p->open = 1;
    return 1;
}

/* track:sample(out, smaps_share) --> n, vanished. The n samples go into
 * the flat array out, SAMPLE_WIDTH slots per process, so a steady sample
 * creates no table and no string: process k (0-based) has at out[9k + 1 ..]
 *   id, pid, start, rss, vms, pss, uss, cpu_ns, name
 * id numbers the process within this ProcTrack (never reused); pss and uss
 * are false when unknown (estimates between smaps reads, see proctrack.h);
 * cpu_ns is its CPU time (all threads) in ns; name is a string when the
 * process is new or its name changed since the last call (a fork that
 * execs), else false. smaps_share: the fraction of processes whose
 * smaps_rollup is re-read (>= 1 or true: all; nil/false: 0). Slots past 9n
 * are left alone. */
#define SAMPLE_WIDTH 9
static int track_sample(lua_State *L)
{
    l_track *p = check(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    double share = lua_isboolean(L, 3) ? (lua_toboolean(L, 3) ? 1.0 : 0.0) : luaL_optnumber(L, 3, 0);
    if (p->outcap < p->t.n) {
        size_t cap = p->t.n + 8;
        cp_procsample *o = realloc(p->out, cap * sizeof *o);
        if (!o) return cp_l_oserror(L, ENOMEM, "realloc", "sampling %d processes", (int)p->t.n);
        p->out = o;
        p->outcap = cap;
    }
    size_t vanished = 0;
    size_t n = cp_proctrack_sample(&p->t, p->out, p->outcap, share, &vanished);
    lua_Integer b = 0;
    for (size_t i = 0; i < n; i++, b += SAMPLE_WIDTH) {
        const cp_procsample *s = &p->out[i];
        cp_proctrack_entry *e = &p->t.e[i]; /* out[i] is e[i]'s sample */
        lua_pushinteger(L, (lua_Integer)e->id); lua_rawseti(L, 2, b + 1);
        lua_pushinteger(L, s->pid); lua_rawseti(L, 2, b + 2);
        lua_pushinteger(L, (lua_Integer)s->start); lua_rawseti(L, 2, b + 3);
        lua_pushinteger(L, (lua_Integer)s->rss); lua_rawseti(L, 2, b + 4);
        lua_pushinteger(L, (lua_Integer)s->vms); lua_rawseti(L, 2, b + 5);
        if (s->pss >= 0) lua_pushinteger(L, s->pss); else lua_pushboolean(L, 0);
        lua_rawseti(L, 2, b + 6);
        if (s->uss >= 0) lua_pushinteger(L, s->uss); else lua_pushboolean(L, 0);
        lua_rawseti(L, 2, b + 7);
        lua_pushinteger(L, (lua_Integer)s->cpu_ns); lua_rawseti(L, 2, b + 8);
        if (e->renamed) {
            lua_pushstring(L, s->name);
            e->renamed = 0;
        } else {
            lua_pushboolean(L, 0);
        }
        lua_rawseti(L, 2, b + 9);
    }
    lua_pushinteger(L, (lua_Integer)n);
    lua_pushinteger(L, (lua_Integer)vanished);
    return 2;
}

/* track:rescan() --> number of processes tracked. */
static int track_rescan(lua_State *L)
{
    l_track *p = check(L);
    long n = cp_proctrack_rescan(&p->t);
    if (n < 0) return cp_l_oserror(L, errno, "rescan", "rescanning the tree of pid %d", (int)p->t.root);
    lua_pushinteger(L, n);
    return 1;
}

/* track:pids() --> list of the tracked pids, root first. */
static int track_pids(lua_State *L)
{
    l_track *p = check(L);
    lua_createtable(L, (int)p->t.n, 0);
    for (size_t i = 0; i < p->t.n; i++) {
        lua_pushinteger(L, p->t.e[i].pid);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* track:smaps_reads() --> smaps_rollup reads so far (what PSS costs). */
static int track_smaps_reads(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check(L)->t.smaps_reads);
    return 1;
}

static int track_tostring(lua_State *L)
{
    l_track *p = luaL_checkudata(L, 1, TRACK_MT);
    if (p->open) lua_pushfstring(L, TRACK_MT " (root %d, %d processes)", (int)p->t.root, (int)p->t.n);
    else lua_pushliteral(L, TRACK_MT " (closed)");
    return 1;
}

void cp_l_proctrack_open(lua_State *L, int t)
{
    static const luaL_Reg methods[] = {
        {"sample", track_sample},
        {"rescan", track_rescan},
        {"pids", track_pids},
        {"smaps_reads", track_smaps_reads},
        {"close", track_close},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", track_close},
        {"__close", track_close},
        {"__tostring", track_tostring},
        {NULL, NULL},
    };
    cp_l_newclass(L, TRACK_MT, methods, meta, 0);
    lua_pushcfunction(L, l_proctrack);
    lua_setfield(L, t, "proctrack");
}
