/* l_capi.c: the core's function table for other coproc C modules (lcapi.h). */
#include "lcapi.h"
#include "lcore.h"
#include "loop.h"

#include <lauxlib.h>
#include <lualib.h>

static lua_State *new_state(const char *path, const char *cpath)
{
    lua_State *W = luaL_newstate();
    if (!W) return NULL;
    luaL_openlibs(W);
    cp_l_preload_core(W);
    lua_getglobal(W, "package");
    if (path) { lua_pushstring(W, path); lua_setfield(W, -2, "path"); }
    if (cpath) { lua_pushstring(W, cpath); lua_setfield(W, -2, "cpath"); }
    lua_pop(W, 1);
    cp_l_reseed(W);
    return W;
}

static const cp_core_api g_api = {
    CP_CAPI_VERSION, sizeof(cp_core_api), sizeof(cp_messenger), CP_VERSION,
    cp_now, cp_loop_interrupt,
    cp_messenger_open_transport, cp_messenger_pump, cp_messenger_flush_nb, cp_messenger_drain,
    cp_source_start, cp_source_stop, cp_source_activity, cp_source_set_max_sleep, cp_loop_wait,
    cp_l_messenger_push, new_state,
};

void cp_l_capi_open(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&g_api);
    lua_setfield(L, LUA_REGISTRYINDEX, CP_CAPI_KEY);
}
