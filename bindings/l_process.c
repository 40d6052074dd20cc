/* l_process.c: coproc.Process (a worker's pid, reaping, signals) and
 * core.spawn, which forks a worker and runs its Lua side.
 *
 *   core.spawn(target, kwargs, {method = "fresh"|"inherit", fifo = bool,
 *                               trust = "code"|"data"})
 *     -> messenger, process
 *
 * trust is the mode of the host's end (what the host accepts from the
 * worker); the worker's end starts in "code" (it must rebuild the target).
 *
 * "fresh": target and kwargs are encoded here, before the fork (so an
 * EncodeError is raised in the host and no process is made); the child makes
 * a new lua_State and decodes them. "inherit": the child runs target in its
 * copy of this state. Either way the child never returns into the host's Lua
 * frames: it ends with _exit. */
#include "lcore.h"
#include "lmessenger.h"
#include "codec.h"
#include "coproc_core.h"
#include "loop.h"
#include "proc.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lualib.h>

#define CP_PROCESS_MT "coproc.Process"

typedef struct l_process {
    cp_proc p;
    int     started;
} l_process;

int cp_core_open(lua_State *L);

static l_process *check(lua_State *L, int i)
{
    return luaL_checkudata(L, i, CP_PROCESS_MT);
}

static int l_pid(lua_State *L)
{
    lua_pushinteger(L, check(L, 1)->p.pid);
    return 1;
}

static int l_poll(lua_State *L)
{
    l_process *lp = check(L, 1);
    lua_pushboolean(L, !lp->started || cp_proc_poll(&lp->p));
    return 1;
}

static int l_wait(lua_State *L)
{
    l_process *lp = check(L, 1);
    double t = luaL_optnumber(L, 2, -1);
    if (!lp->started) { lua_pushboolean(L, 1); return 1; }
    cp_messenger_flush_all();
    int done = cp_proc_wait(&lp->p, t);
    if (!done && cp_loop_take_interrupt()) return luaL_error(L, "interrupted!");
    lua_pushboolean(L, done);
    return 1;
}

static int l_kill(lua_State *L)
{
    l_process *lp = check(L, 1);
    int sig = (int)luaL_optinteger(L, 2, SIGTERM);
    luaL_argcheck(L, sig >= 0 && sig < NSIG, 2, "not a signal number");
    lua_pushboolean(L, lp->started && cp_proc_kill(&lp->p, sig) == 0);
    return 1;
}

static int l_terminate(lua_State *L)
{
    l_process *lp = check(L, 1);
    double grace = luaL_optnumber(L, 2, 0.5);
    if (lp->started) cp_proc_terminate(&lp->p, grace);
    return 0;
}

/* exitcode, signal: (code, nil) when exited, (nil, sig) when killed, nil
 * while running. */
static int l_exitcode(lua_State *L)
{
    l_process *lp = check(L, 1);
    if (!lp->started) return 0;
    cp_proc_poll(&lp->p);
    int code = cp_proc_exitcode(&lp->p);
    if (code == INT_MIN) return 0;
    if (code >= 0) { lua_pushinteger(L, code); return 1; }
    lua_pushnil(L);
    lua_pushinteger(L, -code);
    return 2;
}

static int l_gc(lua_State *L)
{
    l_process *lp = check(L, 1);
    /* Only the process that made the worker may stop it. */
    if (lp->started && lp->p.owner == getpid()) {
        cp_proc_terminate(&lp->p, 0.5);
        cp_proc_release(&lp->p);
    }
    return 0;
}

static int l_tostring(lua_State *L)
{
    l_process *lp = check(L, 1);
    lua_pushfstring(L, "coproc.Process(%d)", (int)lp->p.pid);
    return 1;
}

/* ---- the child's side ---- */

static void reseed(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_getglobal(L, "math");
    lua_getfield(L, -1, "randomseed");
    lua_pushinteger(L, (lua_Integer)getpid() * 1000003 ^ (lua_Integer)ts.tv_nsec);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec);
    lua_pcall(L, 2, 0, 0);
    lua_pop(L, 1);
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = luaL_typename(L, 1);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Run require("coproc.worker")[fn](messenger, ...) with nargs arguments
 * already pushed after the messenger; returns the exit code. */
static int run_worker(lua_State *L, const char *fn, int nargs)
{
    int base = lua_gettop(L) - nargs - 1; /* messenger is at base + 1 */
    lua_pushcfunction(L, msghandler);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "coproc.worker");
    int code = 70;
    if (lua_pcall(L, 1, 1, base + nargs + 2) != LUA_OK) {
        fprintf(stderr, "coproc worker %d: cannot load coproc.worker: %s\n", (int)getpid(), lua_tostring(L, -1));
        return code;
    }
    lua_getfield(L, -1, fn);
    for (int i = 1; i <= nargs + 1; i++) lua_pushvalue(L, base + i);
    if (lua_pcall(L, nargs + 1, 1, base + nargs + 2) != LUA_OK) {
        fprintf(stderr, "coproc worker %d: %s\n", (int)getpid(), lua_tostring(L, -1));
        return code;
    }
    code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
    return code;
}

static void preload_core(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, cp_core_open);
    lua_setfield(L, -2, "coproc.core");
    lua_pop(L, 1);
}

static _Noreturn void child_main(lua_State *L, int fresh, int fifo, const char *payload, size_t plen,
                                 const char *path, const char *cpath)
{
    cp_messenger_forget_all();
    cp_proc_forget_all();
    int code;
    if (fresh) {
        lua_State *W = luaL_newstate();
        if (!W) _exit(71);
        luaL_openlibs(W);
        preload_core(W);
        lua_getglobal(W, "package");
        lua_pushstring(W, path);
        lua_setfield(W, -2, "path");
        lua_pushstring(W, cpath);
        lua_setfield(W, -2, "cpath");
        lua_pop(W, 1);
        reseed(W);
        luaL_requiref(W, "coproc.core", cp_core_open, 0); /* registers the metatables */
        lua_pop(W, 1);
        l_messenger *lm = cp_l_messenger_push(W);
        if (cp_messenger_open(&lm->m, CP_CHILD_FD, fifo, NULL)) _exit(72);
        lua_pushlstring(W, payload, plen);
        code = run_worker(W, "main_fresh", 1);
        cp_l_messenger_drain(lm, 10.0);
        /* W is not closed: __gc work of a half-finished worker must not run. */
    } else {
        reseed(L);
        l_messenger *lm = cp_l_messenger_push(L);
        if (cp_messenger_open(&lm->m, CP_CHILD_FD, fifo, NULL)) _exit(72);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 2);
        code = run_worker(L, "run", 2);
        cp_l_messenger_drain(lm, 10.0);
    }
    fflush(NULL);
    _exit(code & 0xff);
}

static int l_spawn(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 3);
    int fresh = 1, fifo = 0;
    cp_trust trust = CP_TRUST_CODE; /* trust: of the host end */
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "method");
        const char *method = luaL_optstring(L, -1, "fresh");
        if (strcmp(method, "inherit") == 0) fresh = 0;
        else if (strcmp(method, "fresh") != 0)
            return luaL_error(L, "unknown start method '%s' (expected 'fresh' or 'inherit')", method);
        lua_getfield(L, 3, "fifo");
        fifo = lua_toboolean(L, -1);
        lua_getfield(L, 3, "trust"); /* trust */
        trust = cp_l_checktrust(L, -1);
        lua_pop(L, 3);
    }
    /* Everything that can fail or allocate happens before the fork. */
    cp_buf payload = CP_BUF_INIT;
    const char *path = "", *cpath = "";
    if (fresh) {
        lua_createtable(L, 2, 0);
        lua_pushvalue(L, 1);
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, 2);
        lua_rawseti(L, -2, 2);
        char err[CP_CODEC_ERRLEN];
        if (cp_codec_encode(L, lua_gettop(L), &payload, err, sizeof err)) {
            cp_buf_free(&payload);
            return cp_l_error(L, "EncodeError", "cannot send the worker to a fresh process: %s", err);
        }
        lua_pop(L, 1);
        lua_getglobal(L, "package");
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "path");
            if (lua_isstring(L, -1)) path = lua_tostring(L, -1);
            lua_getfield(L, -2, "cpath");
            if (lua_isstring(L, -1)) cpath = lua_tostring(L, -1);
        }
        /* path/cpath stay anchored on the stack until we return. */
    }
    l_messenger *lm = cp_l_messenger_push(L);
    lm->trust = (int)trust; /* trust: the child's end keeps "code" until it says otherwise */
    int mi = lua_gettop(L);
    l_process *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    memset(lp, 0, sizeof *lp);
    lp->p.pidfd = -1;
    luaL_setmetatable(L, CP_PROCESS_MT);
    int pi = lua_gettop(L);

    int fd = -1;
    pid_t pid = cp_proc_spawn(&lp->p, &fd, fresh);
    if (pid < 0) {
        int e = errno;
        cp_buf_free(&payload);
        return luaL_error(L, "cannot start a worker: %s", strerror(e));
    }
    if (pid == 0) child_main(L, fresh, fifo, payload.data ? cp_buf_head(&payload) : "", cp_buf_size(&payload), path, cpath);
    cp_buf_free(&payload);
    lp->started = 1;
    if (cp_messenger_open(&lm->m, fd, fifo, &lp->p)) {
        int e = errno;
        cp_proc_terminate(&lp->p, 0);
        return luaL_error(L, "cannot set up the worker connection: %s", strerror(e));
    }
    /* The messenger keeps its process alive (it reports its exit). */
    lua_pushvalue(L, pi);
    lua_setiuservalue(L, mi, 1);
    lua_pushvalue(L, mi);
    lua_pushvalue(L, pi);
    return 2;
}

static int l_cpu_count(lua_State *L)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    lua_pushinteger(L, n > 0 ? n : 1);
    return 1;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, cp_now());
    return 1;
}

/* table_new(narray, nhash): a table with room for that many items, so a
 * list filled out of order (pool results) stays in the array part. */
static int l_table_new(lua_State *L)
{
    lua_Integer na = luaL_optinteger(L, 1, 0), nh = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, na >= 0 && na <= (1 << 26), 1, "array size out of range");
    luaL_argcheck(L, nh >= 0 && nh <= (1 << 26), 2, "hash size out of range");
    lua_createtable(L, (int)na, (int)nh);
    return 1;
}

static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

static int l_terminate_all(lua_State *L)
{
    coproc_terminate_all(luaL_optnumber(L, 1, 0.5));
    return 0;
}

void coproc_interrupt(void) { cp_loop_interrupt(); }

void coproc_terminate_all(double grace) { cp_proc_terminate_all(grace); }

static const luaL_Reg methods[] = {
    {"pid", l_pid},
    {"poll", l_poll},
    {"wait", l_wait},
    {"kill", l_kill},
    {"terminate", l_terminate},
    {"exitcode", l_exitcode},
    {NULL, NULL}
};

static const luaL_Reg meta[] = {
    {"__gc", l_gc},
    {"__close", l_gc},
    {"__tostring", l_tostring},
    {NULL, NULL}
};

static pid_t g_atexit_pid;

static void at_exit(void)
{
    /* A host that exits (os.exit, end of script) takes its workers along. */
    if (g_atexit_pid == getpid()) cp_proc_terminate_all(0.5);
}

void cp_l_process_open(lua_State *L, int t)
{
    if (g_atexit_pid != getpid()) {
        g_atexit_pid = getpid();
        atexit(at_exit);
    }
    if (luaL_newmetatable(L, CP_PROCESS_MT)) {
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"spawn", l_spawn},
        {"cpu_count", l_cpu_count},
        {"getpid", l_getpid},
        {"now", l_now},
        {"terminate_all", l_terminate_all},
        {"isatty", l_isatty},
        {"table_new", l_table_new},
        {NULL, NULL}
    };
    luaL_setfuncs(L, fns, 0);
    (void)t;
}
