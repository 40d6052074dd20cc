/* l_command.c: coproc.Command, an external program run by the monitor's
 * command line (a cp_proc from cp_proc_spawn_exec, src/proc.h), as
 * core.monitor.spawn(). It can forward
 * the signals that would stop a wrapper (SIGINT, SIGTERM, SIGHUP) to the
 * program, so `coproc-lua -m coproc.monitor -- cmd` stops the way cmd does
 * and still writes what it collected. */
#include "lmonitor.h"
#include "proc.h"
#include "loop.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#define COMMAND_MT "coproc.Command"

/* The shell's convention at the Lua edge: the exit status, or 128 + signal
 * (cp_proc_exitcode gives -signal); -1 while it runs. */
static int shell_exitcode(const cp_proc *p)
{
    int code = cp_proc_exitcode(p);
    if (code == INT_MIN) return -1;
    return code < 0 ? 128 - code : code;
}

typedef struct {
    cp_proc c;
    pid_t owner;   /* the process that started it: only it may kill or reap */
    int open;
    int forwarding;
    int signal;    /* first signal received while forwarding, 0: none */
} l_command;

/* ---- signal forwarding (one command at a time) ------------------------ */

static const int FORWARDED[] = {SIGINT, SIGTERM, SIGHUP};
#define NFORWARDED ((int)(sizeof FORWARDED / sizeof FORWARDED[0]))
static volatile sig_atomic_t g_fwd_pid;   /* 0: nobody to forward to */
static volatile sig_atomic_t g_fwd_first; /* first signal seen, 0: none */
static struct sigaction g_fwd_old[NFORWARDED];
static l_command *g_fwd_owner;

/* A signal from the terminal (si_code SI_KERNEL) went to the whole
 * foreground process group, the program included: only one sent to us
 * alone (kill, timeout(1), a supervisor) is passed on. */
static void on_forwarded(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (!g_fwd_first) g_fwd_first = sig;
    pid_t p = (pid_t)g_fwd_pid;
    if (p > 0 && si->si_code != SI_KERNEL) kill(p, sig);
}

static int forward_start(l_command *c)
{
    if (g_fwd_owner) { errno = EBUSY; return -1; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_forwarded;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    g_fwd_first = 0;
    g_fwd_pid = c->c.pid;
    for (int i = 0; i < NFORWARDED; i++) sigaction(FORWARDED[i], &sa, &g_fwd_old[i]);
    g_fwd_owner = c;
    c->forwarding = 1;
    return 0;
}

/* Back to the handlers from before (coproc-lua's Ctrl-C handling). */
static void forward_stop(l_command *c)
{
    if (!c->forwarding) return;
    for (int i = 0; i < NFORWARDED; i++) sigaction(FORWARDED[i], &g_fwd_old[i], NULL);
    g_fwd_pid = 0;
    if (!c->signal) c->signal = (int)g_fwd_first;
    g_fwd_owner = NULL;
    c->forwarding = 0;
}

/* ---- the type ---------------------------------------------------------- */

static l_command *check(lua_State *L)
{
    if (!cp_l_isclass(L, 1)) luaL_typeerror(L, 1, COMMAND_MT);
    l_command *c = lua_touserdata(L, 1);
    if (!c->open) cp_l_closed(L, COMMAND_MT);
    return c;
}

/* close(), __close and __gc: stops forwarding; a program still running is
 * killed (SIGKILL) and reaped by the process that started it, so an error
 * between spawn and wait leaves nothing behind. Idempotent. */
static int command_close(lua_State *L)
{
    l_command *c = luaL_checkudata(L, 1, COMMAND_MT);
    if (!c->open) return 0;
    if (c->owner == cp_self_pid()) {
        forward_stop(c);
        if (!c->c.reaped && c->c.pid > 0) {
            kill(c->c.pid, SIGKILL);
            while (cp_proc_wait_intr(&c->c, -1) < 0 && errno == EINTR) {}
        }
    }
    cp_proc_release(&c->c);
    c->open = 0;
    return 0;
}

/* core.monitor.spawn(argv [, {forward_signals = bool}]) --> Command.
 * Raises OSError when the program cannot be started (errno of the exec:
 * "cannot run 'x': No such file or directory"). With forward_signals,
 * SIGINT, SIGTERM and SIGHUP sent to this process are passed on to the
 * program until it is reaped or the Command closed (the terminal's own
 * Ctrl-C reaches it directly); cmd:signal() tells the first one. */
static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int fwd = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "forward_signals");
        fwd = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_Integer n = luaL_len(L, 1);
    luaL_argcheck(L, n >= 1, 1, "empty command");
    luaL_argcheck(L, n < 1 << 20, 1, "too many arguments");
    /* argv pointers live in a userdata so a raise in the loop frees them. */
    char **argv = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *argv, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        if (lua_type(L, -1) != LUA_TSTRING) return luaL_argerror(L, 1, "arguments must be strings");
        argv[i - 1] = (char *)lua_tostring(L, -1); /* anchored by the argument table */
        lua_pop(L, 1);
    }
    argv[n] = NULL;
    l_command *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c); /* born closed */
    c->c.pidfd = -1;
    luaL_setmetatable(L, COMMAND_MT);
    if (fwd && g_fwd_owner) return luaL_error(L, "another command forwards signals already");
    if (cp_proc_spawn_exec(&c->c, argv) < 0)
        return cp_l_oserror(L, errno, "execvp", "cannot run '%s'", argv[0]);
    c->owner = cp_self_pid();
    c->open = 1;
    if (fwd) forward_start(c);
    return 1;
}

/* cmd:wait([timeout]) --> exit code (128 + signal when killed), or nil on
 * timeout; nil timeout waits forever. While forwarding, signals never end
 * the wait (they reach the program, and the wait goes on until it exits);
 * otherwise a Ctrl-C of coproc-lua raises an interrupted error. */
static int command_wait(lua_State *L)
{
    l_command *c = check(L);
    double timeout = luaL_optnumber(L, 2, -1);
    double deadline = timeout >= 0 ? cp_now() + timeout : -1;
    int r;
    for (;;) {
        r = cp_proc_wait_intr(&c->c, deadline < 0 ? -1 : deadline - cp_now() > 0 ? deadline - cp_now() : 0);
        if (r >= 0 || errno != EINTR) break;
        if (!c->forwarding && cp_loop_take_interrupt())
            return cp_l_error(L, "Interrupted", "interrupted!");
    }
    if (r < 0) return cp_l_oserror(L, errno, "waitpid", "waiting for pid %d", (int)c->c.pid);
    if (r == 0) { luaL_pushfail(L); return 1; }
    forward_stop(c);
    lua_pushinteger(L, shell_exitcode(&c->c));
    return 1;
}

static int command_pid(lua_State *L)
{
    lua_pushinteger(L, check(L)->c.pid);
    return 1;
}

/* cmd:kill([sig = SIGTERM]) --> true if sent (false once reaped). */
static int command_kill(lua_State *L)
{
    l_command *c = check(L);
    int sig = (int)luaL_optinteger(L, 2, SIGTERM);
    lua_pushboolean(L, !c->c.reaped && c->c.pid > 0 && kill(c->c.pid, sig) == 0);
    return 1;
}

/* cmd:signal() --> the first signal this process received while forwarding
 * (an integer, e.g. 2 for SIGINT), or nil. */
static int command_signal(lua_State *L)
{
    l_command *c = check(L);
    int s = c->signal ? c->signal : c->forwarding ? (int)g_fwd_first : 0;
    if (s) lua_pushinteger(L, s); else luaL_pushfail(L);
    return 1;
}

static int command_tostring(lua_State *L)
{
    l_command *c = luaL_checkudata(L, 1, COMMAND_MT);
    if (!c->open) lua_pushliteral(L, COMMAND_MT " (closed)");
    else if (c->c.reaped) lua_pushfstring(L, COMMAND_MT " (pid %d, exited %d)", (int)c->c.pid, shell_exitcode(&c->c));
    else lua_pushfstring(L, COMMAND_MT " (pid %d, running)", (int)c->c.pid);
    return 1;
}

void cp_l_command_open(lua_State *L, int t)
{
    static const luaL_Reg methods[] = {
        {"wait", command_wait},
        {"pid", command_pid},
        {"kill", command_kill},
        {"signal", command_signal},
        {"close", command_close},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", command_close},
        {"__close", command_close},
        {"__tostring", command_tostring},
        {NULL, NULL},
    };
    cp_l_newclass(L, COMMAND_MT, methods, meta, 0);
    lua_pushcfunction(L, l_spawn);
    lua_setfield(L, t, "spawn");
}
