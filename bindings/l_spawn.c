/* l_spawn.c: core.spawn, which forks a worker and runs its Lua side.
 *
 *   core.spawn(target, kwargs, {method = "fresh"|"inherit", arrival_order = bool,
 *              status = bool, trust = "code"|"data"}) -> messenger, process
 *
 * trust is the mode of the host's end (what the host accepts from the
 * worker); the worker's end starts in "code" (it must rebuild the target).
 *
 * "fresh": target and kwargs are encoded here, before the fork (so an
 * EncodeError is raised in the host and no process is made); the child makes
 * a new lua_State and decodes them. "inherit": the child runs target in its
 * copy of this state. Either way the child never returns into the host's Lua
 * frames: it ends with _exit. Its connection is the fd cp_proc_spawn hands
 * it (whatever number the socketpair got, never a fixed one). status asks
 * for the page a pool worker shares with its host (lbatch.h). A system call
 * that fails on the way raises OSError {errno =, call =}. */
#define _GNU_SOURCE /* dladdr */
#include "lcore.h"
#include "lmessenger.h"
#include "lprocess.h"
#include "codec.h"
#include "loop.h"
#include "mtune.h"
#include "proc.h"
#include "prefault.h"
#include "messenger.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lualib.h>

/* ---- the child's side ---- */

/* Run require("coproc.worker")[fn](messenger, ...) with nargs arguments
 * already pushed after the messenger; returns the exit code. */
static int run_worker(lua_State *L, const char *fn, int nargs)
{
    int base = lua_gettop(L) - nargs - 1; /* messenger is at base + 1 */
    lua_pushcfunction(L, cp_l_msghandler);
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

/* A new state with the standard libraries and coproc built in, on the
 * host's package paths; NULL without memory. */
static lua_State *new_state(const char *path, const char *cpath)
{
    lua_State *W = luaL_newstate();
    if (!W) return NULL;
    if (cp_malloc_kept()) lua_setallocf(W, cp_malloc_lua_alloc, NULL); /* mtune.h */
    luaL_openlibs(W);
    cp_l_preload_core(W);
    lua_getglobal(W, "package");
    lua_pushstring(W, path);
    lua_setfield(W, -2, "path");
    lua_pushstring(W, cpath);
    lua_setfield(W, -2, "cpath");
    lua_pop(W, 1);
    luaL_requiref(W, "coproc.core", cp_core_open, 0); /* registers the metatables */
    lua_pop(W, 1);
    return W;
}

/* The fork server's prepared state (cp_fresh.prepare): a new state with the
 * worker's modules loaded, made once in the server; every worker it forks
 * on the same package paths starts from its copy instead of building and
 * loading its own (parsing them is most of a fresh start's instructions,
 * and the copy shares the pages until they are written). It never ran
 * anything of the host. */
static lua_State *g_zygote;
static char *g_zpath, *g_zcpath;

static int load_worker_modules(lua_State *W)
{
    /* "coproc" too: a class whose code names the module (coproc.sleep,
     * coproc.Error...) brings it as an upvalue, and loading it in each
     * worker took 3-4 ms of a 5 ms start (it reads nothing of the process
     * at load: no pid, no environment). */
    static const char *const mods[] = {"coproc.worker", "coproc.pool_worker", "coproc"};
    for (size_t i = 0; i < sizeof mods / sizeof *mods; i++) {
        lua_getglobal(W, "require");
        lua_pushstring(W, mods[i]);
        lua_call(W, 1, 0);
    }
    return 0;
}

static const char *get_str(const char **p, const char *end);

static void prepare(const char *data, size_t len)
{
    if (len < 1) return;
    const char *p = data + 1, *end = data + len;
    const char *path = get_str(&p, end), *cpath = get_str(&p, end);
    if (!path || !cpath) return;
    lua_State *W = new_state(path, cpath);
    if (!W) return;
    lua_pushcfunction(W, load_worker_modules);
    if (lua_pcall(W, 0, 0, 0) != LUA_OK) return; /* each worker loads its own (W is left) */
    lua_gc(W, LUA_GCCOLLECT); /* compact, and a fresh GC cycle ahead */
    g_zpath = strdup(path);
    g_zcpath = strdup(cpath);
    if (g_zpath && g_zcpath) g_zygote = W;
}

/* A worker ends: the workers it started itself (a pool it made, its copy
 * of the host's pool) are stopped and reaped first, as a host's are at its
 * exit (l_system.c): left running they would be orphans, and zombies of a
 * pid 1 that does not reap. */
static _Noreturn void worker_exit(int code)
{
    cp_proc_terminate_all(CP_EXIT_GRACE);
    fflush(NULL);
    _exit(code & 0xff);
}

/* A worker of the fork server marks the pages it touched (prefault.h) at
 * its first idle moment after a message came in: its start and its first
 * answer are behind it. */
static pid_t g_learner; /* the worker, not a process it forks */

static void learn_when_fed(void)
{
    if (cp_self_pid() != g_learner) return;
    if (cp_messenger_arrivals() == 0) cp_loop_at_idle(learn_when_fed);
    else cp_prefault_learn();
}

/* The fresh worker: runs coproc.worker.main_fresh on the payload. */
static _Noreturn void run_fresh(int fd, int arrival_order, const char *payload, size_t plen, const char *path,
                                const char *cpath)
{
    lua_State *W = g_zygote && strcmp(path, g_zpath) == 0 && strcmp(cpath, g_zcpath) == 0
                       ? g_zygote : new_state(path, cpath);
    if (!W) _exit(71);
    cp_l_reseed(W);
    l_messenger *lm = cp_l_messenger_push(W);
    if (cp_messenger_open(&lm->m, fd, arrival_order, NULL)) _exit(72);
    if (cp_prefault_wants_learners()) {
        g_learner = cp_self_pid();
        cp_loop_at_idle(learn_when_fed);
    }
    lua_pushlstring(W, payload, plen);
    int code = run_worker(W, "main_fresh", 1);
    cp_l_messenger_drain(lm, 10.0);
    /* W is not closed: __gc work of a half-finished worker must not run. */
    worker_exit(code);
}

/* The request of a fresh start (made in the host, read in the child):
 * arrival_order (1 byte), path and cpath (each a 4-byte length, the bytes
 * and a NUL), then the encoded {target, kwargs}. */
static int put_str(cp_buf *b, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    return cp_buf_append(b, &n, sizeof n) || cp_buf_append(b, s, (size_t)n + 1);
}

/* The next string of the request, or NULL when it is malformed. */
static const char *get_str(const char **p, const char *end)
{
    uint32_t n;
    if (!*p || (size_t)(end - *p) < sizeof n) return NULL;
    memcpy(&n, *p, sizeof n);
    const char *s = *p + sizeof n;
    if ((size_t)(end - s) < (size_t)n + 1 || s[n] != 0) return NULL;
    *p = s + n + 1;
    return s;
}

/* cp_fresh.main: in the new worker (forked by the fork server or by us). */
static void fresh_main(int fd, int status_fd, const char *data, size_t len)
{
    cp_messenger_forget_all();
    cp_proc_forget_all();
    cp_proc_keep_stdio();
    cp_malloc_default_keep(); /* a worker is coproc's own process (mtune.h) */
    cp_status *status = NULL;
    if (status_fd >= 0) {
        void *m = mmap(NULL, sizeof(cp_status), PROT_READ | PROT_WRITE, MAP_SHARED, status_fd, 0);
        if (m == MAP_FAILED) _exit(74);
        close(status_fd);
        status = m;
    }
    cp_l_batch_set_slot(status);
    const char *p = data, *end = data + len;
    if (len < 1) _exit(73);
    int arrival_order = *p++ != 0;
    const char *path = get_str(&p, end);
    const char *cpath = get_str(&p, end);
    if (!path || !cpath) _exit(73);
    run_fresh(fd, arrival_order, p, (size_t)(end - p), path, cpath);
}

/* cp_fresh.forget: what a process forked from the host drops first. */
static void forget_host(void)
{
    cp_messenger_forget_all();
}

/* cp_fresh.warm: in a spare, what fresh_main would make first. */
static void warm(void)
{
    cp_messenger_forget_all();
    cp_proc_forget_all();
    cp_loop();
}

/* cp_fresh.exec_path: coproc-lua, the interpreter with coproc built in:
 * this executable when it is one, else the one installed or built next to
 * coproc/core.so. */
static const char *exec_path(void)
{
    static char path[PATH_MAX];
    static int done;
    if (done) return path[0] ? path : NULL;
    done = 1;
    Dl_info di;
    char self[PATH_MAX], obj[PATH_MAX];
    if (!dladdr((void *)exec_path, &di) || !di.dli_fname || !realpath(di.dli_fname, obj)) return NULL;
    if (realpath("/proc/self/exe", self) && strcmp(self, obj) == 0) {
        memcpy(path, self, sizeof path);
        return path;
    }
    /* obj is <cmod>/coproc/core.so: the build tree has coproc-lua in
     * <cmod>, an installed tree in <cmod>/CP_REL_BIN_FROM_CMOD. */
    char *slash = strrchr(obj, '/');
    if (!slash) return NULL;
    *slash = 0;
    slash = strrchr(obj, '/');
    if (!slash) return NULL;
    *slash = 0;
    static const char *const rel[] = {"", "/" CP_REL_BIN_FROM_CMOD};
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
        char c[PATH_MAX];
        if (snprintf(c, sizeof c, "%s%s/coproc-lua", obj, rel[i]) >= (int)sizeof c) continue;
        if (access(c, X_OK) == 0 && realpath(c, path)) return path;
    }
    path[0] = 0;
    return NULL;
}

/* The build a server must be (forksrv.h): coproc's version and Lua's. */
#define FRESH_VERSION CP_VERSION "/" LUA_VERSION_MAJOR LUA_VERSION_MINOR LUA_VERSION_RELEASE

static const cp_fresh fresh_how = {forget_host, prepare, fresh_main, exec_path, FRESH_VERSION, warm};

/* core._forkserver_pid() -> the pid of this process's fork server, or nil
 * (for tests). */
static int l_forkserver_pid(lua_State *L)
{
    pid_t pid = cp_forksrv_pid();
    if (pid > 0) lua_pushinteger(L, pid);
    else lua_pushnil(L);
    return 1;
}

/* core._forkserver_spares() -> the pids of the fork server's spares, oldest
 * first, once each is ready (for tests). */
static int l_forkserver_spares(lua_State *L)
{
    pid_t pids[CP_FORKSRV_SPARES];
    int n = cp_forksrv_spare_pids(pids, CP_FORKSRV_SPARES);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, pids[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* core._prefault_marked() -> the pages this process's fork server has
 * learned its children touch (prefault.h), -1 outside a server's children
 * (for tests). */
static int l_prefault_marked(lua_State *L)
{
    lua_pushinteger(L, cp_prefault_marked());
    return 1;
}

/* core._hold_forkserver(on): take (true) or give back (false) a hold on
 * the fork server (proc.h cp_proc_hold_fresh). */
static int l_hold_forkserver(lua_State *L)
{
    cp_proc_hold_fresh(lua_toboolean(L, 1));
    return 0;
}

/* core._forkserver(host): become the fork server of host (started by it
 * with posix_spawn, the socket on fd 3; forksrv.h). Never returns. */
static int l_forkserver(lua_State *L)
{
    lua_Integer host = luaL_checkinteger(L, 1);
    cp_forksrv_serve(&fresh_how, 3, (pid_t)host);
    return 0;
}

/* The "inherit" child: runs target in its copy of the host's state. */
static _Noreturn void inherit_main(lua_State *L, int fd, int arrival_order, l_process *lp)
{
    cp_messenger_forget_all();
    cp_proc_forget_all();
    cp_proc_keep_stdio(); /* an inherited messenger may have sat on 0-2 */
    cp_malloc_default_keep(); /* a worker is coproc's own process (mtune.h) */
    if (lp->status_fd >= 0) close(lp->status_fd); /* the mapping stays */
    cp_l_batch_set_slot(lp->status);
    cp_l_reseed(L);
    l_messenger *lm = cp_l_messenger_push(L);
    if (cp_messenger_open(&lm->m, fd, arrival_order, NULL)) _exit(72);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    int code = run_worker(L, "run", 2);
    cp_l_messenger_drain(lm, 10.0);
    worker_exit(code);
}

/* Raise OSError{errno = e, call = call}: a system call failed while
 * starting a worker (fds or processes used up). */
static int os_error(lua_State *L, const char *call, int e)
{
    if (!call) call = "?";
    return cp_l_oserror(L, e, call, "cannot start a worker: %s", call);
}

/* True when n more fds can be opened now. */
static int fds_left(int n)
{
    int fds[4], k = 0;
    while (k < n && k < 4 && (fds[k] = fcntl(0, F_DUPFD_CLOEXEC, 3)) >= 0) k++;
    int e = errno;
    for (int i = 0; i < k; i++) close(fds[i]);
    errno = e;
    return k == n;
}

/* The codec's path starts at the {target, kwargs} pair it was given: name
 * those ("(at [2]["fh"])" -> "(at kwargs["fh"])"). */
static void name_path(char *err, size_t size)
{
    static const char *const names[] = {"(at target", "(at kwargs"};
    for (int i = 0; i < 2; i++) {
        char from[8];
        snprintf(from, sizeof from, "(at [%d]", i + 1);
        char *at = strstr(err, from);
        if (!at) continue;
        char rest[CP_CODEC_ERRLEN];
        snprintf(rest, sizeof rest, "%s", at + strlen(from));
        size_t head = (size_t)(at - err);
        snprintf(at, size - head, "%s%s", names[i], rest);
        return;
    }
}

static int l_spawn(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 3);
    int fresh = 1, arrival_order = 0, want_status = 0;
    cp_trust trust = CP_TRUST_CODE; /* of the host's end */
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "status");
        want_status = lua_toboolean(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, 3, "method");
        const char *method = luaL_optstring(L, -1, "fresh");
        if (strcmp(method, "inherit") == 0) fresh = 0;
        else if (strcmp(method, "fresh") != 0)
            return luaL_error(L, "unknown start method '%s' (expected 'fresh' or 'inherit')", method);
        lua_getfield(L, 3, "arrival_order");
        arrival_order = lua_toboolean(L, -1);
        lua_getfield(L, 3, "trust");
        trust = cp_l_checktrust(L, -1);
        lua_pop(L, 3);
    }
    /* Everything that can fail or allocate happens before the fork. */
    cp_buf req = CP_BUF_INIT;
    if (fresh) {
        const char *path = "", *cpath = "";
        lua_getglobal(L, "package");
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "path");
            if (lua_isstring(L, -1)) path = lua_tostring(L, -1);
            lua_getfield(L, -2, "cpath");
            if (lua_isstring(L, -1)) cpath = lua_tostring(L, -1);
        }
        char ao = (char)arrival_order;
        if (cp_buf_append(&req, &ao, 1) || put_str(&req, path) || put_str(&req, cpath)) {
            cp_buf_free(&req);
            return luaL_error(L, "not enough memory");
        }
        lua_createtable(L, 2, 0);
        lua_pushvalue(L, 1);
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, 2);
        lua_rawseti(L, -2, 2);
        char err[CP_CODEC_ERRLEN];
        if (cp_codec_encode(L, lua_gettop(L), &req, err, sizeof err)) {
            cp_buf_free(&req);
            name_path(err, sizeof err);
            return cp_l_error(L, "EncodeError", "cannot send the worker to a fresh process: %s", err);
        }
        lua_settop(L, 3);
    }
    /* The loop is made on first use, taking two fds (epoll, eventfd), and
     * libev aborts when it cannot get them: make it now, if there is room. */
    if (!fds_left(2)) {
        int e = errno;
        cp_buf_free(&req);
        return os_error(L, "dup", e);
    }
    cp_loop();
    l_messenger *lm = cp_l_messenger_push(L);
    lm->trust = (int)trust; /* the child's end keeps "code" until it says otherwise */
    int mi = lua_gettop(L);
    l_process *lp = cp_l_process_push(L);
    int pi = lua_gettop(L);
    const char *call = NULL;
    if (want_status && cp_l_process_add_status(lp, &call)) {
        int e = errno;
        cp_buf_free(&req);
        return os_error(L, call, e);
    }

    int fd = -1;
    pid_t pid;
    if (fresh) pid = cp_proc_spawn_fresh(&lp->p, &fd, &fresh_how, lp->status_fd, cp_buf_head(&req), cp_buf_size(&req));
    else pid = cp_proc_spawn(&lp->p, &fd, 0);
    cp_buf_free(&req);
    if (pid == 0) inherit_main(L, fd, arrival_order, lp);
    int e = errno;
    cp_l_process_spawned(lp);
    if (pid < 0) return os_error(L, lp->p.failed_call, e);
    lp->started = 1;
    int opened = cp_messenger_open(&lm->m, fd, arrival_order, &lp->p) == 0;
    if (!opened || (lp->p.pidfd >= 0 && lm->m.pidfd < 0)) {
        /* No fd left for the messenger's copy of the pidfd (it watches the
         * worker's exit): an OSError like any other shortage. */
        int e = errno;
        if (opened) cp_messenger_close(&lm->m);
        else close(fd);
        cp_proc_terminate(&lp->p, 0);
        cp_proc_release(&lp->p);
        return os_error(L, opened ? "dup" : "fcntl", e);
    }
    /* The messenger keeps its process alive (it reports its exit). */
    lua_pushvalue(L, pi);
    lua_setiuservalue(L, mi, 1);
    lua_pushvalue(L, mi);
    lua_pushvalue(L, pi);
    return 2;
}


void cp_l_spawn_open(lua_State *L, int t)
{
    t = lua_absindex(L, t);
    lua_pushcfunction(L, l_spawn);
    lua_setfield(L, t, "spawn");
    lua_pushcfunction(L, l_forkserver);
    lua_setfield(L, t, "_forkserver");
    lua_pushcfunction(L, l_forkserver_pid);
    lua_setfield(L, t, "_forkserver_pid");
    lua_pushcfunction(L, l_forkserver_spares);
    lua_setfield(L, t, "_forkserver_spares");
    lua_pushcfunction(L, l_hold_forkserver);
    lua_setfield(L, t, "_hold_forkserver");
    lua_pushcfunction(L, l_prefault_marked);
    lua_setfield(L, t, "_prefault_marked");
}
