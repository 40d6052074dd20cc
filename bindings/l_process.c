/* l_process.c: coproc.Process, the host's handle on one child it started
 * (core.spawn, l_spawn.c): pid, poll, wait, signals, exit code, and the
 * status page it shares with a pool worker (the item it runs, the tickets
 * of work stealing: lbatch.h).
 *
 * close() (also __close and __gc) terminates the child if it still runs
 * (SIGTERM, then SIGKILL after 0.5 s), reaps it and releases its pidfd; only
 * in the process that started it (a forked child's copy owns nothing). */
#define _GNU_SOURCE /* memfd_create */
#include "lcore.h"
#include "lprocess.h"
#include "lmessenger.h"
#include "loop.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GC_GRACE 0.5 /* seconds between SIGTERM and SIGKILL when collected */

l_process *cp_l_process_push(lua_State *L)
{
    l_process *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    memset(lp, 0, sizeof *lp);
    lp->p.pidfd = -1;
    lp->status_fd = -1;
    luaL_setmetatable(L, CP_PROCESS_MT);
    return lp;
}

int cp_l_process_add_status(l_process *lp, const char **call)
{
    int fd = memfd_create("coproc-status", MFD_CLOEXEC);
    if (fd < 0) { *call = "memfd_create"; return -1; }
    if (ftruncate(fd, sizeof(cp_status))) {
        int e = errno;
        close(fd);
        errno = e;
        *call = "ftruncate";
        return -1;
    }
    void *p = mmap(NULL, sizeof(cp_status), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        errno = e;
        *call = "mmap";
        return -1;
    }
    lp->status = p;
    lp->status_fd = fd;
    return 0;
}

void cp_l_process_spawned(l_process *lp)
{
    if (lp->status_fd >= 0) close(lp->status_fd);
    lp->status_fd = -1;
}

static void release(l_process *lp)
{
    if (lp->closed) return;
    lp->closed = 1;
    /* Only the process that made the child may stop it. */
    if (lp->started && lp->p.owner == cp_self_pid()) {
        cp_proc_terminate(&lp->p, GC_GRACE);
        cp_proc_release(&lp->p);
    }
    if (lp->status) munmap(lp->status, sizeof(cp_status));
    lp->status = NULL;
}

/* For methods (the metatable is their upvalue 1, see cp_l_newclass). */
static l_process *check(lua_State *L)
{
    if (!cp_l_isclass(L, 1)) luaL_typeerror(L, 1, CP_PROCESS_MT);
    l_process *lp = lua_touserdata(L, 1);
    if (lp->closed) cp_l_closed(L, CP_PROCESS_MT);
    return lp;
}

static int l_pid(lua_State *L)
{
    lua_pushinteger(L, check(L)->p.pid);
    return 1;
}

/* poll() -> true once the child has exited (reaped). */
static int l_poll(lua_State *L)
{
    l_process *lp = check(L);
    lua_pushboolean(L, !lp->started || cp_proc_poll(&lp->p));
    return 1;
}

/* wait(timeout) -> true when the child exited within timeout seconds (nil:
 * no limit). Output pending on any messenger keeps going meanwhile. */
static int l_wait(lua_State *L)
{
    l_process *lp = check(L);
    double t = luaL_optnumber(L, 2, -1);
    if (!lp->started) { lua_pushboolean(L, 1); return 1; }
    cp_messenger_flush_all();
    int done = cp_proc_wait(&lp->p, t);
    if (!done && cp_loop_take_interrupt()) return cp_l_error(L, "Interrupted", "interrupted!");
    lua_pushboolean(L, done);
    return 1;
}

/* kill(sig) -> true when the signal was sent (default SIGTERM). */
static int l_kill(lua_State *L)
{
    l_process *lp = check(L);
    int sig = (int)luaL_optinteger(L, 2, SIGTERM);
    luaL_argcheck(L, sig >= 0 && sig < NSIG, 2, "not a signal number");
    lua_pushboolean(L, lp->started && cp_proc_kill(&lp->p, sig) == 0);
    return 1;
}

/* terminate(grace): SIGTERM to its process group, SIGKILL after grace
 * seconds (default 0.5); reaps. */
static int l_terminate(lua_State *L)
{
    l_process *lp = check(L);
    double grace = luaL_optnumber(L, 2, GC_GRACE);
    if (lp->started) cp_proc_terminate(&lp->p, grace);
    return 0;
}

/* exitcode() -> code when it exited, (nil, signal) when killed, nothing
 * while it runs. */
static int l_exitcode(lua_State *L)
{
    l_process *lp = check(L);
    if (!lp->started) return 0;
    cp_proc_poll(&lp->p);
    int code = cp_proc_exitcode(&lp->p);
    if (code == INT_MIN) return 0;
    if (code >= 0) { lua_pushinteger(L, code); return 1; }
    lua_pushnil(L);
    lua_pushinteger(L, -code);
    return 2;
}

/* ---- the shared status page (pool workers) ---- */

/* status() -> bid, item as the worker last wrote them (nothing without a page). */
static int l_status(lua_State *L)
{
    l_process *lp = check(L);
    if (!lp->status) return 0;
    lua_pushinteger(L, (lua_Integer)atomic_load_explicit(&lp->status->bid, memory_order_relaxed));
    lua_pushinteger(L, (lua_Integer)atomic_load_explicit(&lp->status->item, memory_order_relaxed));
    return 2;
}

static _Atomic uint64_t *ticket_word(lua_State *L, l_process *lp, int arg)
{
    lua_Integer t = luaL_checkinteger(L, arg);
    luaL_argcheck(L, t >= 1 && t <= CP_TICKETS, arg, "no such ticket");
    if (!lp->status) luaL_error(L, "this worker has no status page");
    return &lp->status->ticket[t];
}

/* ticket(t) -> claimed, limit of the batch sent with ticket t. */
static int l_ticket(lua_State *L)
{
    l_process *lp = check(L);
    uint64_t v = atomic_load(ticket_word(L, lp, 2));
    lua_pushinteger(L, (lua_Integer)(v >> 32));
    lua_pushinteger(L, (lua_Integer)(v & 0xffffffffu));
    return 2;
}

/* set_ticket(t, n): a batch of n items goes out with ticket t. */
static int l_set_ticket(lua_State *L)
{
    l_process *lp = check(L);
    _Atomic uint64_t *w = ticket_word(L, lp, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, n >= 0 && n <= 0xffffffffLL, 3, "batch too large for a ticket");
    atomic_store(w, (uint64_t)n);
    return 0;
}

/* truncate(t, limit) -> the new limit: the batch on ticket t stops after
 * item limit, or after the item it has already claimed if that is later. */
static int l_truncate(lua_State *L)
{
    l_process *lp = check(L);
    _Atomic uint64_t *w = ticket_word(L, lp, 2);
    lua_Integer want = luaL_checkinteger(L, 3);
    uint64_t old = atomic_load(w);
    for (;;) {
        uint64_t claimed = old >> 32, limit = old & 0xffffffffu;
        uint64_t nl = want < 0 ? 0 : (uint64_t)want;
        if (nl < claimed) nl = claimed;
        if (nl >= limit) { lua_pushinteger(L, (lua_Integer)limit); return 1; }
        if (atomic_compare_exchange_weak(w, &old, claimed << 32 | nl)) {
            lua_pushinteger(L, (lua_Integer)nl);
            return 1;
        }
    }
}

/* ---- life cycle ---- */

/* close(), __close and __gc: idempotent. */
static int l_close(lua_State *L)
{
    release(luaL_checkudata(L, 1, CP_PROCESS_MT));
    return 0;
}

static int l_tostring(lua_State *L)
{
    l_process *lp = luaL_checkudata(L, 1, CP_PROCESS_MT);
    if (lp->closed) lua_pushliteral(L, "coproc.Process (closed)");
    else lua_pushfstring(L, "coproc.Process(%d)", (int)lp->p.pid);
    return 1;
}

void cp_l_process_open(lua_State *L, int t)
{
    (void)t;
    static const luaL_Reg methods[] = {
        {"pid", l_pid},
        {"poll", l_poll},
        {"wait", l_wait},
        {"kill", l_kill},
        {"terminate", l_terminate},
        {"exitcode", l_exitcode},
        {"status", l_status},
        {"ticket", l_ticket},
        {"set_ticket", l_set_ticket},
        {"truncate", l_truncate},
        {"close", l_close},
        {NULL, NULL}
    };
    static const luaL_Reg meta[] = {
        {"__gc", l_close},
        {"__close", l_close},
        {"__tostring", l_tostring},
        {NULL, NULL}
    };
    cp_l_newclass(L, CP_PROCESS_MT, methods, meta, 0);
}
