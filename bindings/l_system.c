/* l_system.c: what coproc.core says about and does to the whole process:
 * cpu_count, getpid, isatty, table_new, terminate_all, tune_malloc; the C API of
 * coproc_core.h (coproc_interrupt, coproc_terminate_all); and the one exit
 * hook that takes a host's workers along when it exits. */
#include "lcore.h"
#include "coproc_core.h"
#include "loop.h"
#include "messenger.h"
#include "mtune.h"
#include "proc.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>


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

static int never(void *ud)
{
    (void)ud;
    return 0;
}

/* sleep(seconds): wait that long with every messenger of the process still
 * reading and writing (so a peer sending to us never stalls), and return
 * early on Ctrl-C with coproc.Interrupted. */
static int l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && !isnan(s), 1, "seconds must be a non-negative number");
    cp_messenger_flush_all();
    cp_loop_mark();
    if (cp_loop_wait(never, NULL, isinf(s) ? -1 : s) < 0) return cp_l_error(L, "Interrupted", "interrupted!");
    return 0;
}

/* terminate_all(grace): every child this process started, at once. */
static int l_terminate_all(lua_State *L)
{
    coproc_terminate_all(luaL_optnumber(L, 1, CP_EXIT_GRACE));
    return 0;
}

/* tune_malloc() -> true when malloc now keeps large blocks (mtune.h),
 * false when this C library cannot. */
static int l_tune_malloc(lua_State *L)
{
    lua_pushboolean(L, cp_malloc_keep());
    return 1;
}

/* _malloc_state() -> tuned, mapped, mode: coproc applied mtune.h here;
 * whether a 64 MiB block gets a mapping of its own (nil: cannot tell); what
 * COPROC_MALLOC says ("unset", "keep", "off", "bad"). For tests. */
static int l_malloc_state(lua_State *L)
{
    static const char *const modes[] = {"unset", "keep", "off", "bad"};
    lua_pushboolean(L, cp_malloc_kept());
    int maps = cp_malloc_maps((size_t)64 << 20);
    if (maps < 0) lua_pushnil(L);
    else lua_pushboolean(L, maps);
    lua_pushstring(L, modes[cp_malloc_env(NULL)]);
    return 3;
}

void coproc_interrupt(void) { cp_loop_interrupt(); }

void coproc_terminate_all(double grace) { cp_proc_terminate_all(grace); }

static pid_t g_atexit_pid;

static void at_exit(void)
{
    /* A host that exits (os.exit, end of script, exit() from C) takes its
     * workers along; a forked child's copy of this hook does nothing. */
    if (g_atexit_pid == getpid()) cp_proc_terminate_all(CP_EXIT_GRACE);
}

void cp_l_system_open(lua_State *L, int t)
{
    /* require "coproc": from here on no socket or pidfd may land on 0-2. */
    cp_proc_keep_stdio();
    /* Only when asked: a host that loads coproc keeps its malloc as it is. */
    if (cp_malloc_env(NULL) == CP_MALLOC_KEEP) cp_malloc_keep();
    if (g_atexit_pid != getpid()) {
        g_atexit_pid = getpid();
        atexit(at_exit);
    }
    static const luaL_Reg fns[] = {
        {"cpu_count", l_cpu_count},
        {"getpid", l_getpid},
        {"terminate_all", l_terminate_all},
        {"isatty", l_isatty},
        {"table_new", l_table_new},
        {"sleep", l_sleep},
        {"tune_malloc", l_tune_malloc},
        {"_malloc_state", l_malloc_state},
        {NULL, NULL}
    };
    t = lua_absindex(L, t);
    lua_pushvalue(L, t);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
