/* l_clock.c: the clocks of coproc.core, in one place: now() (monotonic, the
 * same in every process, so a note's time taken in the host lines up with
 * the monitor worker's samples), time() (wall clock, epoch seconds) and
 * cputime() (CPU seconds used by this process). */
#include "lcore.h"
#include "loop.h"

#include <time.h>

static int l_now(lua_State *L)
{
    lua_pushnumber(L, cp_now());
    return 1;
}

static double clock_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int l_time(lua_State *L) { lua_pushnumber(L, clock_of(CLOCK_REALTIME)); return 1; }
static int l_cputime(lua_State *L) { lua_pushnumber(L, clock_of(CLOCK_PROCESS_CPUTIME_ID)); return 1; }

void cp_l_clock_open(lua_State *L, int t)
{
    static const luaL_Reg fns[] = {
        {"now", l_now},
        {"time", l_time},
        {"cputime", l_cputime},
        {NULL, NULL},
    };
    lua_pushvalue(L, t);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
