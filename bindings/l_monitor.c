/* l_monitor.c: core.monitor, the C side of coproc.monitor: the types
 * ProcTrack (l_proctrack.c) and Command (l_command.c) and the one-shot
 * /proc reads below. Policy (what to sample when, units, notes) lives in
 * lua/coproc/monitor/. Plotting is the separate module coproc.plot
 * (l_plot.c), so processes that never plot never map PLplot. */
#define _GNU_SOURCE /* ppoll */
#include "lmonitor.h"
#include "procstat.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>

static void setint(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

/* core.monitor.read(pid, with_smaps) --> sample table, or nil when the
 * process does not exist (not an error: it may just have exited). pss and
 * uss are false when unknown. */
static int l_read(lua_State *L)
{
    cp_procsample s;
    if (cp_procstat_read((pid_t)luaL_checkinteger(L, 1), &s, lua_toboolean(L, 2)) < 0) {
        if (errno != ENOENT && errno != ESRCH)
            return cp_l_oserror(L, errno, "read", "reading /proc/%d", (int)lua_tointeger(L, 1));
        luaL_pushfail(L);
        return 1;
    }
    lua_createtable(L, 0, 12);
    setint(L, "pid", s.pid);
    setint(L, "ppid", s.ppid);
    setint(L, "start", (lua_Integer)s.start);
    setint(L, "cpu_ticks", (lua_Integer)s.cpu_ticks);
    setint(L, "cpu_ns", (lua_Integer)s.cpu_ns);
    setint(L, "rss", (lua_Integer)s.rss);
    setint(L, "vms", (lua_Integer)s.vms);
    setint(L, "threads", s.threads);
    if (s.pss >= 0) setint(L, "pss", s.pss); else { lua_pushboolean(L, 0); lua_setfield(L, -2, "pss"); }
    if (s.uss >= 0) setint(L, "uss", s.uss); else { lua_pushboolean(L, 0); lua_setfield(L, -2, "uss"); }
    lua_pushlstring(L, &s.state, 1);
    lua_setfield(L, -2, "state");
    lua_pushstring(L, s.name);
    lua_setfield(L, -2, "name");
    return 1;
}

static int l_exists(lua_State *L)
{
    lua_pushboolean(L, cp_procstat_exists((pid_t)luaL_checkinteger(L, 1)));
    return 1;
}

/* core.monitor.descendants(pid) --> list of the descendants' pids. */
static int l_descendants(lua_State *L)
{
    pid_t root = (pid_t)luaL_checkinteger(L, 1);
    cp_pidvec v = {0};
    long n = cp_procstat_descendants(root, 0, &v);
    if (n < 0) {
        int e = errno;
        cp_pidvec_free(&v);
        return cp_l_oserror(L, e, "descendants", "walking the children of %d", (int)root);
    }
    if (!lua_checkstack(L, 2)) { cp_pidvec_free(&v); return luaL_error(L, "stack overflow"); }
    lua_createtable(L, (int)n, 0); /* may raise: v leaks only on a memory error */
    for (long i = 0; i < n; i++) {
        lua_pushinteger(L, v.v[i]);
        lua_rawseti(L, -2, i + 1);
    }
    cp_pidvec_free(&v);
    return 1;
}

/* wait_readable(fd, timeout) --> true when fd is readable (or hung up)
 * within timeout seconds. The monitor's sampling clock: a bare poll() costs
 * far less per wakeup than a full messenger wait, and it only needs to know
 * whether a message has started to arrive. */
static int l_wait_readable(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    double timeout = luaL_checknumber(L, 2);
    struct timespec ts;
    if (timeout < 0) timeout = 0;
    ts.tv_sec = (time_t)timeout;
    ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
    struct pollfd pf = {fd, POLLIN, 0};
    int r = ppoll(&pf, 1, &ts, NULL);
    if (r < 0 && errno != EINTR) return cp_l_oserror(L, errno, "ppoll", "waiting on fd %d", fd);
    lua_pushboolean(L, r > 0);
    return 1;
}

static int l_hz(lua_State *L) { lua_pushinteger(L, cp_procstat_hz()); return 1; }

void cp_l_monitor_open(lua_State *L, int t)
{
    static const luaL_Reg fns[] = {
        {"read", l_read},
        {"exists", l_exists},
        {"descendants", l_descendants},
        {"wait_readable", l_wait_readable},
        {"hz", l_hz},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    int mt = lua_gettop(L);
    cp_l_proctrack_open(L, mt);
    cp_l_command_open(L, mt);
    lua_setfield(L, t, "monitor");
}
