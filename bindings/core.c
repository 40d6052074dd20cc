/* core.c: builds the coproc.core module table. */
#include "lcore.h"
#include "lcapi.h"
#include "coproc_core.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#ifndef CP_VERSION
#error "CP_VERSION comes from project(coproc VERSION ...) in CMakeLists.txt"
#endif

static int l_set_error_factory(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, CP_L_ERROR_FACTORY);
    return 0;
}

int cp_core_open(lua_State *L)
{
    lua_newtable(L);
    int t = lua_gettop(L);
    lua_pushcfunction(L, l_set_error_factory);
    lua_setfield(L, t, "set_error_factory");
    lua_pushliteral(L, CP_VERSION);
    lua_setfield(L, t, "version");
    cp_l_system_open(L, t);
    cp_l_clock_open(L, t);
    cp_l_codec_open(L, t);
    cp_l_messenger_open(L, t);
    cp_l_waiter_open(L, t);
    cp_l_process_open(L, t);
    cp_l_spawn_open(L, t);
    cp_l_pollproxy_open(L, t);
    cp_l_batch_open(L, t);
    cp_l_monitor_open(L, t);
    cp_l_forward_open(L, t);
    cp_l_capi_open(L); /* for coproc.mpi_core */
    return 1;
}

void cp_l_preload_core(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, cp_core_open);
    lua_setfield(L, -2, "coproc.core");
    lua_pop(L, 1);
}

void cp_l_reseed(lua_State *L)
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
