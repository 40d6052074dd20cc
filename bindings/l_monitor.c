/* l_monitor.c: Lua glue for the monitor: core.monitor = { proctrack, read,
 * exists, plot, spawn, now, time, getpid, hz }. Policy (what to sample when,
 * units of the stats, notes) lives in lua/coproc/monitor.lua. */
#define _GNU_SOURCE /* ppoll */
#include "lcore.h"
#include "procstat.h"
#include "proctrack.h"
#include "command.h"
#ifdef COPROC_HAVE_PLOT
#include "plot.h"
#endif

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TRACK_MT "coproc.ProcTrack"
#define COMMAND_MT "coproc.Command"

/* ---- ProcTrack: the sampled process set ------------------------------- */

typedef struct {
    cp_proctrack t;
    cp_procsample *out;
    size_t outcap;
    int open;
} l_track;

static l_track *check_track(lua_State *L)
{
    l_track *p = luaL_checkudata(L, 1, TRACK_MT);
    if (!p->open) luaL_error(L, "attempt to use a closed " TRACK_MT);
    return p;
}

static int track_close(lua_State *L)
{
    l_track *p = luaL_checkudata(L, 1, TRACK_MT);
    if (p->open) {
        cp_proctrack_free(&p->t);
        free(p->out);
        p->out = NULL;
        p->open = 0;
    }
    return 0;
}

/* core.monitor.proctrack(root, include_children, prune) --> ProcTrack, or
 * nil, message when root does not exist. */
static int l_proctrack(lua_State *L)
{
    lua_Integer root = luaL_checkinteger(L, 1);
    int children = lua_toboolean(L, 2);
    lua_Integer prune = luaL_optinteger(L, 3, 0);
    l_track *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p); /* born closed */
    luaL_setmetatable(L, TRACK_MT);
    if (root <= 0 || cp_proctrack_init(&p->t, (pid_t)root, children, (pid_t)prune) < 0) {
        if (root > 0 && errno == ENOMEM) return luaL_error(L, "out of memory");
        luaL_pushfail(L);
        lua_pushfstring(L, "no process with pid %d", (int)root);
        return 2;
    }
    p->open = 1;
    return 1;
}

static void setint(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

/* [-0, +0, m] Fill the table on top with one sample. pss/uss are false
 * when unknown. */
static void push_sample_fields(lua_State *L, const cp_procsample *s)
{
    setint(L, "pid", s->pid);
    setint(L, "ppid", s->ppid);
    setint(L, "start", (lua_Integer)s->start);
    setint(L, "cpu_ticks", (lua_Integer)s->cpu_ticks);
    setint(L, "cpu_ns", (lua_Integer)s->cpu_ns);
    setint(L, "rss", (lua_Integer)s->rss);
    setint(L, "vms", (lua_Integer)s->vms);
    if (s->pss >= 0) setint(L, "pss", s->pss); else { lua_pushboolean(L, 0); lua_setfield(L, -2, "pss"); }
    if (s->uss >= 0) setint(L, "uss", s->uss); else { lua_pushboolean(L, 0); lua_setfield(L, -2, "uss"); }
    lua_pushstring(L, s->name);
    lua_setfield(L, -2, "name");
}

/* track:sample(out, with_smaps) --> n, vanished. The n samples go into
 * the flat array out, SAMPLE_WIDTH slots per process, so a steady sample
 * creates no table and no string: process k (0-based) has at out[9k + 1 ..]
 *   id, pid, start, rss, vms, pss, uss, cpu_ns, name
 * id numbers the process within this ProcTrack (never reused); pss and uss
 * are false when unknown; cpu_ns is its CPU time (all threads) in ns; name
 * is a string when the process is new or its name changed since the last
 * call (a fork that execs), else false. Slots past 9n are left alone. */
#define SAMPLE_WIDTH 9
static int track_sample(lua_State *L)
{
    l_track *p = check_track(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    int smaps = lua_toboolean(L, 3);
    if (p->outcap < p->t.n) {
        size_t cap = p->t.n + 8;
        cp_procsample *o = realloc(p->out, cap * sizeof *o);
        if (!o) return luaL_error(L, "out of memory");
        p->out = o;
        p->outcap = cap;
    }
    size_t vanished = 0;
    size_t n = cp_proctrack_sample(&p->t, p->out, p->outcap, smaps, &vanished);
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
    l_track *p = check_track(L);
    long n = cp_proctrack_rescan(&p->t);
    if (n < 0) return luaL_error(L, "out of memory");
    lua_pushinteger(L, n);
    return 1;
}

/* track:pids() --> list of the tracked pids, root first. */
static int track_pids(lua_State *L)
{
    l_track *p = check_track(L);
    lua_createtable(L, (int)p->t.n, 0);
    for (size_t i = 0; i < p->t.n; i++) {
        lua_pushinteger(L, p->t.e[i].pid);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int track_tostring(lua_State *L)
{
    l_track *p = luaL_checkudata(L, 1, TRACK_MT);
    if (p->open) lua_pushfstring(L, TRACK_MT " (root %d, %d processes)", (int)p->t.root, (int)p->t.n);
    else lua_pushliteral(L, TRACK_MT " (closed)");
    return 1;
}

static const luaL_Reg track_methods[] = {
    {"sample", track_sample},
    {"rescan", track_rescan},
    {"pids", track_pids},
    {"close", track_close},
    {NULL, NULL},
};

/* ---- one-shot reads and clocks ---------------------------------------- */

/* core.monitor.read(pid, with_smaps) --> sample table, or nil when gone. */
static int l_read(lua_State *L)
{
    cp_procsample s;
    if (cp_procstat_read((pid_t)luaL_checkinteger(L, 1), &s, lua_toboolean(L, 2)) < 0) {
        luaL_pushfail(L);
        return 1;
    }
    lua_createtable(L, 0, 10);
    push_sample_fields(L, &s);
    return 1;
}

static int l_exists(lua_State *L)
{
    lua_pushboolean(L, cp_procstat_exists((pid_t)luaL_checkinteger(L, 1)));
    return 1;
}

static double clock_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* now(): CLOCK_MONOTONIC seconds, the same in every process, so a note's
 * time taken in the host lines up with the worker's samples. */
static int l_now(lua_State *L) { lua_pushnumber(L, clock_of(CLOCK_MONOTONIC)); return 1; }
static int l_time(lua_State *L) { lua_pushnumber(L, clock_of(CLOCK_REALTIME)); return 1; }
/* cputime(): CPU seconds used by this process (user + system). */
static int l_cputime(lua_State *L) { lua_pushnumber(L, clock_of(CLOCK_PROCESS_CPUTIME_ID)); return 1; }
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
    lua_pushboolean(L, r > 0);
    return 1;
}

static int l_getpid(lua_State *L) { lua_pushinteger(L, getpid()); return 1; }
static int l_hz(lua_State *L) { lua_pushinteger(L, cp_procstat_hz()); return 1; }

/* ---- plot ------------------------------------------------------------- */

#ifdef COPROC_HAVE_PLOT
/* Everything a plot call allocates, freed by __close/__gc if a conversion
 * raises halfway (a to-be-closed box owns it). */
typedef struct {
    cp_plot_line *lines;
    size_t nlines;
    cp_plot_note *notes;
    double *mem; /* all x/y arrays, one block per line pair */
} plot_box;

static int plotbox_gc(lua_State *L)
{
    plot_box *b = lua_touserdata(L, 1);
    if (b->lines)
        for (size_t i = 0; i < b->nlines; i++) free((void *)b->lines[i].x);
    free(b->lines);
    free(b->notes);
    b->lines = NULL;
    b->notes = NULL;
    b->nlines = 0;
    return 0;
}

static double *numbers(lua_State *L, int idx, const char *what, size_t n, double *dst)
{
    for (size_t k = 0; k < n; k++) {
        lua_rawgeti(L, idx, (lua_Integer)k + 1);
        int isnum;
        double v = lua_tonumberx(L, -1, &isnum);
        dst[k] = isnum ? v : 0.0 / 0.0; /* holes become gaps (NaN is skipped in ranges) */
        lua_pop(L, 1);
    }
    (void)what;
    return dst;
}

static const char *optstr(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    const char *s = lua_tostring(L, -1); /* kept alive by the spec table */
    lua_pop(L, 1);
    return s;
}

/* core.monitor.plot{path, title, metric, font_size, width, height,
 *   lines = {{label, x = {...}, y = {...}, emphasis}}, notes = {{x, y, text}}}
 * --> true, or nil, message. Argument mistakes raise. */
static int l_plot(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    plot_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* index 2 */
    memset(b, 0, sizeof *b);
    lua_newtable(L);
    lua_pushcfunction(L, plotbox_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, plotbox_gc);
    lua_setfield(L, -2, "__close");
    lua_setmetatable(L, -2);
    lua_toclose(L, 2);

    cp_plot_spec s;
    memset(&s, 0, sizeof s);
    s.path = optstr(L, 1, "path");
    if (!s.path) return luaL_argerror(L, 1, "field 'path' (a string) expected");
    s.title = optstr(L, 1, "title");
    s.metric = optstr(L, 1, "metric");
    lua_getfield(L, 1, "font_size"); s.font_size = lua_tonumber(L, -1); lua_pop(L, 1);
    lua_getfield(L, 1, "width"); s.width = (int)lua_tointeger(L, -1); lua_pop(L, 1);
    lua_getfield(L, 1, "height"); s.height = (int)lua_tointeger(L, -1); lua_pop(L, 1);

    if (lua_getfield(L, 1, "lines") != LUA_TTABLE) return luaL_argerror(L, 1, "field 'lines' (a list) expected");
    int li = lua_gettop(L);
    size_t nl = lua_rawlen(L, li);
    b->lines = calloc(nl ? nl : 1, sizeof *b->lines);
    if (!b->lines) return luaL_error(L, "out of memory");
    for (size_t i = 0; i < nl; i++) {
        if (lua_rawgeti(L, li, (lua_Integer)i + 1) != LUA_TTABLE) return luaL_argerror(L, 1, "lines[i] must be tables");
        int e = lua_gettop(L);
        cp_plot_line *l = &b->lines[i];
        l->label = optstr(L, e, "label");
        lua_getfield(L, e, "emphasis"); l->emphasis = lua_toboolean(L, -1); lua_pop(L, 1);
        int tx = lua_getfield(L, e, "x"), ty = lua_getfield(L, e, "y");
        if (tx != LUA_TTABLE || ty != LUA_TTABLE) return luaL_argerror(L, 1, "lines[i].x and .y must be lists");
        size_t nx = lua_rawlen(L, -2), ny = lua_rawlen(L, -1);
        size_t n = nx < ny ? nx : ny;
        double *m = malloc((n ? n : 1) * 2 * sizeof *m);
        if (!m) return luaL_error(L, "out of memory");
        l->x = numbers(L, e + 1, "x", n, m);
        l->y = numbers(L, e + 2, "y", n, m + n);
        l->n = n;
        b->nlines = i + 1;
        lua_settop(L, li);
    }
    s.lines = b->lines;
    s.nlines = nl;
    lua_settop(L, 2);

    if (lua_getfield(L, 1, "notes") == LUA_TTABLE) {
        int ni = lua_gettop(L);
        size_t nn = lua_rawlen(L, ni);
        b->notes = calloc(nn ? nn : 1, sizeof *b->notes);
        if (!b->notes) return luaL_error(L, "out of memory");
        for (size_t i = 0; i < nn; i++) {
            if (lua_rawgeti(L, ni, (lua_Integer)i + 1) != LUA_TTABLE) return luaL_argerror(L, 1, "notes[i] must be tables");
            int e = lua_gettop(L);
            lua_getfield(L, e, "x"); b->notes[i].x = lua_tonumber(L, -1);
            lua_getfield(L, e, "y"); b->notes[i].y = lua_tonumber(L, -1);
            b->notes[i].text = optstr(L, e, "text");
            lua_settop(L, ni);
        }
        s.notes = b->notes;
        s.nnotes = nn;
    }
    char err[512];
    int r = cp_plot_memory(&s, err, sizeof err);
    if (r < 0) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2; /* the box is closed on return */
    }
    lua_pushboolean(L, 1);
    return 1;
}
#endif

/* ---- external commands (CLI) ------------------------------------------ */

typedef struct {
    cp_command c;
    pid_t owner;
} l_command;

static l_command *check_command(lua_State *L)
{
    return luaL_checkudata(L, 1, COMMAND_MT);
}

/* core.monitor.spawn{argv...} --> Command, or nil, message. */
static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1);
    if (n < 1) return luaL_argerror(L, 1, "empty command");
    /* argv pointers live in a userdata so a raise in the loop frees them. */
    char **argv = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *argv, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        argv[i - 1] = (char *)luaL_checkstring(L, -1); /* anchored by the argument table */
        lua_pop(L, 1);
    }
    argv[n] = NULL;
    l_command *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);
    c->c.pidfd = -1;
    luaL_setmetatable(L, COMMAND_MT);
    if (cp_command_spawn(&c->c, argv) < 0) {
        luaL_pushfail(L);
        lua_pushfstring(L, "cannot run '%s': %s", argv[0], strerror(errno));
        return 2;
    }
    c->owner = getpid();
    return 1;
}

/* cmd:wait(timeout) --> exit code (128 + signal when killed), or nil on
 * timeout. timeout nil waits forever. */
static int command_wait(lua_State *L)
{
    l_command *c = check_command(L);
    double timeout = luaL_optnumber(L, 2, -1);
    int r = cp_command_wait(&c->c, timeout);
    if (r < 0) {
        if (errno == EINTR) return luaL_error(L, "interrupted!");
        return luaL_error(L, "waiting for pid %d: %s", (int)c->c.pid, strerror(errno));
    }
    if (r == 0) { luaL_pushfail(L); return 1; }
    lua_pushinteger(L, cp_command_exitcode(&c->c));
    return 1;
}

static int command_pid(lua_State *L)
{
    lua_pushinteger(L, check_command(L)->c.pid);
    return 1;
}

static int command_kill(lua_State *L)
{
    l_command *c = check_command(L);
    int sig = (int)luaL_optinteger(L, 2, 15);
    lua_pushboolean(L, !c->c.reaped && c->c.pid > 0 && kill(c->c.pid, sig) == 0);
    return 1;
}

static int command_gc(lua_State *L)
{
    l_command *c = check_command(L);
    cp_command_release(&c->c);
    return 0;
}

static const luaL_Reg command_methods[] = {
    {"wait", command_wait},
    {"pid", command_pid},
    {"kill", command_kill},
    {NULL, NULL},
};

/* ---- registration ----------------------------------------------------- */

static void new_metatable(lua_State *L, const char *name, const luaL_Reg *methods,
                          lua_CFunction gc, lua_CFunction tostring)
{
    if (luaL_newmetatable(L, name)) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__close");
        if (tostring) {
            lua_pushcfunction(L, tostring);
            lua_setfield(L, -2, "__tostring");
        }
    }
    lua_pop(L, 1);
}

void cp_l_monitor_open(lua_State *L, int t)
{
    new_metatable(L, TRACK_MT, track_methods, track_close, track_tostring);
    new_metatable(L, COMMAND_MT, command_methods, command_gc, NULL);
    static const luaL_Reg fns[] = {
        {"proctrack", l_proctrack},
        {"read", l_read},
        {"exists", l_exists},
        {"now", l_now},
        {"time", l_time},
        {"cputime", l_cputime},
        {"getpid", l_getpid},
        {"wait_readable", l_wait_readable},
        {"hz", l_hz},
        {"spawn", l_spawn},
#ifdef COPROC_HAVE_PLOT
        {"plot", l_plot},
#endif
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    lua_pushboolean(L, 
#ifdef COPROC_HAVE_PLOT
        1
#else
        0
#endif
    );
    lua_setfield(L, -2, "have_plot");
    lua_setfield(L, t, "monitor");
}
