/* l_mpi.c: the module coproc.mpi_core (file coproc/mpi_core.so), the C side
 * of coproc.mpi. The only part of coproc that links MPI; it reaches the
 * core (messengers, loop, event sources) through the core's function table
 * (lcapi.h), so it keeps no messenger or loop state of its own.
 *
 *   init() -> rank, size               MPI_Init_thread once, coproc's communicator
 *   link(peer, tag, host_side, arrival_order) -> Messenger over MPI
 *   run_fresh(peer, tag, payload, path, cpath, arrival_order) -> exit code
 *                                      a "fresh" worker in a new Lua state of
 *                                      this rank (coproc.mpi_serve.run_worker)
 *   send_notice(code, bid, item, timeout) -> bool   tell rank 0 we are ending
 *   notice(rank) -> {code, bid, item, pid} | nil     (rank 0)
 *   quiesce(timeout) -> bool           closed links finished
 *   finalize()                         MPI_Finalize (after quiesce)
 *   abort(code)                        MPI_Abort: ends the whole job
 *   catch_sigterm() / terminated()     the launcher's SIGTERM ends waits
 *   set_max_sleep(seconds)             the longest back-off step (idle ranks)
 *   processor_name(), tag_ub(), links(), link_peer(m), pid_alive(pid)
 *   msghandler                          the interpreter's: error + traceback(s)
 *   raw_pingpong(peer, iters, bytes, tag) -> seconds per round trip
 *                                      plain C MPI_Send/MPI_Recv (bench)
 *   _yield_state() -> job_default, now | nil   MPI's yielding (tests)
 *
 * Misuse raises argument errors; an MPI call that fails raises an error
 * with MPI's own message (Open MPI's default handler usually aborts the job
 * first). */
#include "lcapi.h"
#include "lcore.h"
#include "transport_mpi.h"

#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const cp_core_api *api;
static cp_mpi_hooks g_hooks;
static volatile sig_atomic_t g_term;

static void tick(void)
{
    /* After the launcher's SIGTERM, every wait ends (the job is over). */
    if (g_term) api->interrupt();
}

static int mpi_fail(lua_State *L, int rc, const char *what)
{
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    MPI_Error_string(rc, s, &n);
    s[n < MPI_MAX_ERROR_STRING ? n : MPI_MAX_ERROR_STRING - 1] = 0;
    return luaL_error(L, "coproc.mpi: %s failed: %s", what, s);
}

static int initialized(void)
{
    int flag = 0, fin = 0;
    MPI_Initialized(&flag);
    MPI_Finalized(&fin);
    return flag && !fin;
}

static int l_init(lua_State *L)
{
    int flag = 0, fin = 0;
    MPI_Finalized(&fin);
    if (fin) return luaL_error(L, "coproc.mpi: MPI is finalized already");
    MPI_Initialized(&flag);
    if (!flag) {
        int provided;
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SINGLE, &provided);
        if (rc != MPI_SUCCESS) return mpi_fail(L, rc, "MPI_Init_thread");
    }
    g_hooks.pump = api->messenger_pump;
    g_hooks.flush_nb = api->messenger_flush_nb;
    g_hooks.source_start = api->source_start;
    g_hooks.source_stop = api->source_stop;
    g_hooks.now = api->now;
    g_hooks.tick = tick;
    g_hooks.activity = api->source_activity;
    /* The back-off sleeps tens of microseconds: without this, the kernel
     * may stretch each by its default 50 us of timer slack. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    int rc = cp_mpi_setup(&g_hooks, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(L, rc, "MPI_Comm_dup");
    lua_pushinteger(L, cp_mpi_rank());
    lua_pushinteger(L, cp_mpi_size());
    return 2;
}

static void need_init(lua_State *L)
{
    if (!initialized() || cp_mpi_comm() == MPI_COMM_NULL)
        luaL_error(L, "coproc.mpi: MPI is not initialized (call init() first)");
}

static int check_rank(lua_State *L, int i)
{
    lua_Integer r = luaL_checkinteger(L, i);
    luaL_argcheck(L, r >= 0 && r < cp_mpi_size(), i, "no such rank");
    return (int)r;
}

static int check_tag(lua_State *L, int i)
{
    lua_Integer t = luaL_checkinteger(L, i);
    luaL_argcheck(L, t > CP_MPI_NOTICE_TAG && t < INT32_MAX && t % 2 == 0, i, "even tag above 0 expected");
    return (int)t;
}

/* [-0, +1, m] A Messenger over a new link; raises on out of memory. */
static void push_link(lua_State *L, int peer, int tag, int host_side, int arrival_order)
{
    l_messenger *lm = api->messenger_push(L);
    void *ctx = cp_mpi_link_new(peer, tag, host_side);
    if (!ctx) luaL_error(L, "out of memory");
    api->messenger_open_transport(&lm->m, &cp_transport_mpi, ctx, arrival_order);
}

static int l_link(lua_State *L)
{
    need_init(L);
    int peer = check_rank(L, 1), tag = check_tag(L, 2);
    push_link(L, peer, tag, lua_toboolean(L, 3), lua_toboolean(L, 4));
    return 1;
}

static int l_link_peer(lua_State *L)
{
    l_messenger *lm = luaL_checkudata(L, 1, CP_MESSENGER_MT);
    int tag = 0, peer = cp_mpi_link_peer(&lm->m, &tag);
    if (peer < 0) return 0;
    lua_pushinteger(L, peer);
    lua_pushinteger(L, tag);
    return 2;
}

/* run_fresh(peer, tag, payload, path, cpath, arrival_order) -> exit code.
 * The worker gets a Lua state of its own, as a "fresh" local worker does,
 * so nothing one worker leaves behind reaches the next one on this rank. */
static int l_run_fresh(lua_State *L)
{
    need_init(L);
    int peer = check_rank(L, 1), tag = check_tag(L, 2);
    size_t plen;
    const char *payload = luaL_checklstring(L, 3, &plen);
    const char *path = luaL_optstring(L, 4, NULL), *cpath = luaL_optstring(L, 5, NULL);
    int arrival = lua_toboolean(L, 6);
    lua_State *W = api->new_state(path, cpath);
    if (!W) return luaL_error(L, "out of memory");
    int code = 70;
    lua_pushcfunction(W, cp_l_msghandler);
    int h = lua_gettop(W);
    lua_getglobal(W, "require");
    lua_pushliteral(W, "coproc.mpi_serve");
    if (lua_pcall(W, 1, 1, h) != LUA_OK) {
        fprintf(stderr, "coproc.mpi rank %d: cannot load coproc.mpi_serve: %s\n", cp_mpi_rank(), lua_tostring(W, -1));
        lua_close(W);
        lua_pushinteger(L, code);
        return 1;
    }
    lua_getfield(W, -1, "run_worker");
    l_messenger *lm = api->messenger_push(W);
    void *ctx = cp_mpi_link_new(peer, tag, 0);
    if (!ctx) { lua_close(W); return luaL_error(L, "out of memory"); }
    api->messenger_open_transport(&lm->m, &cp_transport_mpi, ctx, arrival);
    lua_pushlstring(W, payload, plen);
    if (lua_pcall(W, 2, 1, h) != LUA_OK)
        fprintf(stderr, "coproc.mpi rank %d: %s\n", cp_mpi_rank(), lua_tostring(W, -1));
    else
        code = lua_isinteger(W, -1) ? (int)lua_tointeger(W, -1) : 0;
    if (lm->m.state == CP_M_OPEN) api->messenger_drain(&lm->m, 10.0);
    lua_close(W);   /* closes the messenger: EOF to the host */
    lua_pushinteger(L, code);
    return 1;
}

static int l_send_notice(lua_State *L)
{
    need_init(L);
    cp_mpi_notice_t n;
    n.code = luaL_checkinteger(L, 1);
    n.bid = luaL_optinteger(L, 2, 0);
    n.item = luaL_optinteger(L, 3, 0);
    n.pid = getpid();
    double timeout = luaL_optnumber(L, 4, 2.0);
    lua_pushboolean(L, cp_mpi_send_notice(&n, timeout));
    return 1;
}

static int l_notice(lua_State *L)
{
    need_init(L);
    cp_mpi_notice_t n;
    if (!cp_mpi_notice(check_rank(L, 1), &n)) return 0;
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, n.code); lua_setfield(L, -2, "code");
    lua_pushinteger(L, n.bid); lua_setfield(L, -2, "bid");
    lua_pushinteger(L, n.item); lua_setfield(L, -2, "item");
    lua_pushinteger(L, n.pid); lua_setfield(L, -2, "pid");
    return 1;
}

static int l_quiesce(lua_State *L)
{
    double t = luaL_optnumber(L, 1, 5.0);
    lua_pushboolean(L, cp_mpi_comm() == MPI_COMM_NULL || cp_mpi_quiesce(t));
    return 1;
}

static int l_finalize(lua_State *L)
{
    (void)L;
    if (!initialized()) return 0;
    cp_mpi_shutdown();
    MPI_Finalize();
    return 0;
}

/* The status MPI_Abort was called with (0: not aborting). */
static volatile sig_atomic_t g_aborting;

static void on_kill_signal(int sig)
{
    (void)sig;
    _exit(g_aborting);
}

static int l_abort(lua_State *L)
{
    int code = (int)luaL_optinteger(L, 1, 1);
    if (code == 0) code = 1;
    fflush(NULL);
    /* The launcher is killing the job already: MPI_Abort would only wait
     * (seconds, in a 1 ms sleep loop) for an answer that never comes. */
    if (g_term) _exit(code);
    g_aborting = code;
    /* Open MPI's launcher answers an abort with SIGCONT, then SIGTERM and
     * SIGKILL odls_base_sigkill_timeout apart: the first one will do. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_kill_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCONT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    MPI_Abort(MPI_COMM_WORLD, code);
    _exit(code);
}

#define TERM_GRACE 5 /* seconds rank 0 may take to report, after SIGTERM */

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "coproc.mpi: rank 0 did not finish within 5 s of SIGTERM; exiting\n";
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing to do */ }
    _exit(128 + SIGTERM);
}

/* The launcher ends the job (a rank died, or the job was cancelled): every
 * wait ends (tick), the script's error reaches coproc.mpi.main, which says
 * what was running; if rank 0 is stuck elsewhere, it exits anyway. */
static void on_sigterm(int sig)
{
    (void)sig;
    if (!g_term) {
        /* Said at once: the launcher's SIGKILL follows within a second
         * (odls_base_sigkill_timeout), maybe before the Lua report. */
        static const char msg[] = "coproc.mpi: the MPI job is ending: rank 0 got SIGTERM from the launcher "
                                  "(a rank died, or the job was cancelled)\n";
        if (write(2, msg, sizeof msg - 1) < 0) { /* nothing to do */ }
        alarm(TERM_GRACE);
    }
    g_term = 1;
    api->interrupt();
}

static int l_catch_sigterm(lua_State *L)
{
    (void)L;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigterm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    return 0;
}

static int l_terminated(lua_State *L)
{
    lua_pushboolean(L, g_term);
    return 1;
}

static int l_processor_name(lua_State *L)
{
    need_init(L);
    char name[MPI_MAX_PROCESSOR_NAME];
    int n = 0;
    MPI_Get_processor_name(name, &n);
    lua_pushlstring(L, name, (size_t)n);
    return 1;
}

static int l_tag_ub(lua_State *L)
{
    need_init(L);
    int *ub = NULL, flag = 0;
    MPI_Comm_get_attr(cp_mpi_comm(), MPI_TAG_UB, &ub, &flag);
    lua_pushinteger(L, flag && ub ? *ub : 32767);
    return 1;
}

/* set_max_sleep(seconds): the longest back-off step of this process's waits
 * (nil: the default, 1 ms). An idle serving rank sleeps longer. */
static int l_set_max_sleep(lua_State *L)
{
    double s = luaL_optnumber(L, 1, CP_SOURCE_SLEEP_MAX);
    luaL_argcheck(L, s > 0 && s <= 1.0, 1, "0 .. 1 s expected");
    api->source_set_max_sleep(s);
    return 0;
}

static int l_links(lua_State *L)
{
    lua_pushinteger(L, cp_mpi_comm() == MPI_COMM_NULL ? 0 : cp_mpi_links());
    return 1;
}

/* pid_alive(pid) -> bool: a process of this node with that pid runs (a
 * zombie, dead and not yet reaped by its launcher, does not). */
static int l_pid_alive(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int alive = pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
    if (alive) {
        char path[48], buf[256];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = 0;
            const char *p = strrchr(buf, ')');
            if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X')) alive = 0;
        }
    }
    lua_pushboolean(L, alive);
    return 1;
}

/* _yield_state() -> nil (coproc's polls leave MPI's yielding alone), or
 * job_default, now (booleans; for tests). */
static int l_yield_state(lua_State *L)
{
    int def, now;
    if (!cp_mpi_yield_state(&def, &now)) { lua_pushnil(L); return 1; }
    lua_pushboolean(L, def);
    lua_pushboolean(L, now);
    return 2;
}

static int l_raw_pingpong(lua_State *L)
{
    need_init(L);
    int peer = check_rank(L, 1);
    lua_Integer iters = luaL_checkinteger(L, 2), bytes = luaL_optinteger(L, 3, 64);
    int tag = check_tag(L, 4);
    int initiator = lua_toboolean(L, 5);
    luaL_argcheck(L, iters > 0, 2, "positive iteration count expected");
    luaL_argcheck(L, bytes >= 0 && bytes <= (1 << 24), 3, "0 .. 16 MiB expected");
    char *buf = calloc(1, (size_t)bytes + 1);
    if (!buf) return luaL_error(L, "out of memory");
    MPI_Comm c = cp_mpi_comm();
    double t0 = api->now();
    for (lua_Integer i = 0; i < iters; i++) {
        if (initiator) {
            MPI_Send(buf, (int)bytes, MPI_BYTE, peer, tag, c);
            MPI_Recv(buf, (int)bytes, MPI_BYTE, peer, tag, c, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(buf, (int)bytes, MPI_BYTE, peer, tag, c, MPI_STATUS_IGNORE);
            MPI_Send(buf, (int)bytes, MPI_BYTE, peer, tag, c);
        }
    }
    double dt = api->now() - t0;
    free(buf);
    lua_pushnumber(L, dt / (double)iters);
    return 1;
}

__attribute__((visibility("default"))) int luaopen_coproc_mpi_core(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "coproc.core");
    lua_call(L, 1, 0);   /* publishes the function table */
    lua_getfield(L, LUA_REGISTRYINDEX, CP_CAPI_KEY);
    const cp_core_api *a = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!a || a->version != CP_CAPI_VERSION || a->size != sizeof(cp_core_api)
        || a->messenger_size != sizeof(cp_messenger) || strcmp(a->build, CP_VERSION) != 0)
        return luaL_error(L, "coproc.mpi_core: built for another coproc.core (version %s)", CP_VERSION);
    api = a;
    static const luaL_Reg fns[] = {
        {"init", l_init},
        {"link", l_link},
        {"link_peer", l_link_peer},
        {"run_fresh", l_run_fresh},
        {"send_notice", l_send_notice},
        {"notice", l_notice},
        {"quiesce", l_quiesce},
        {"finalize", l_finalize},
        {"abort", l_abort},
        {"catch_sigterm", l_catch_sigterm},
        {"terminated", l_terminated},
        {"processor_name", l_processor_name},
        {"tag_ub", l_tag_ub},
        {"links", l_links},
        {"set_max_sleep", l_set_max_sleep},
        {"raw_pingpong", l_raw_pingpong},
        {"_yield_state", l_yield_state},
        {"pid_alive", l_pid_alive},
        {"msghandler", cp_l_msghandler},
        {NULL, NULL}
    };
    luaL_newlib(L, fns);
    lua_pushinteger(L, CP_MPI_NOTICE_TAG);
    lua_setfield(L, -2, "NOTICE_TAG");
    return 1;
}
