/* core.c: builds the coproc.core module table and raises coproc errors. */
#include "lcore.h"
#include "coproc_core.h"

#include <stdarg.h>
#include <stdio.h>

static const char ERROR_FACTORY_KEY = 'f'; /* registry[&key] = factory */

static int l_set_error_factory(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ERROR_FACTORY_KEY);
    return 0;
}

void cp_l_pusherror(lua_State *L, const char *cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, cls);
    lua_setfield(L, -2, "class");
    lua_pushvfstring(L, fmt, ap);
    lua_setfield(L, -2, "message");
    va_end(ap);
}

int cp_l_raise(lua_State *L)
{
    /* Pass the plain table through the factory so it gets its class and
     * __tostring; a factory failure still raises the plain table. */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &ERROR_FACTORY_KEY) == LUA_TFUNCTION) {
        lua_pushvalue(L, -2);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && !lua_isnil(L, -1)) {
            lua_remove(L, -2);
            return lua_error(L);
        }
    }
    lua_pop(L, 1);
    return lua_error(L);
}

int cp_l_error(lua_State *L, const char *cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, cls);
    lua_setfield(L, -2, "class");
    lua_pushvfstring(L, fmt, ap);
    lua_setfield(L, -2, "message");
    va_end(ap);
    return cp_l_raise(L);
}

void cp_l_newclass(lua_State *L, const char *tname, const luaL_Reg *methods,
                   const luaL_Reg *meta, int nup)
{
    if (!luaL_newmetatable(L, tname)) {
        lua_pop(L, nup + 1);
        return;
    }
    if (meta) luaL_setfuncs(L, meta, 0);
    int mt = lua_gettop(L);
    int n = 0;
    while (methods[n].name) n++;
    lua_createtable(L, 0, n);
    lua_pushvalue(L, mt);
    for (int i = 0; i < nup; i++) lua_pushvalue(L, mt - nup + i);
    luaL_setfuncs(L, methods, nup + 1);
    lua_setfield(L, mt, "__index");
    lua_pop(L, nup + 1);
}

int cp_l_isclass(lua_State *L, int i)
{
    if (!lua_getmetatable(L, i)) return 0;
    int ok = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    return ok;
}

int cp_l_closed(lua_State *L, const char *tname)
{
    return luaL_error(L, "attempt to use a closed %s", tname);
}

/* Weak so the module still builds while a part is being written. */
#pragma weak cp_l_codec_open
#pragma weak cp_l_messenger_open
#pragma weak cp_l_process_open
#pragma weak cp_l_monitor_open

int cp_core_open(lua_State *L)
{
    lua_newtable(L);
    int t = lua_gettop(L);
    lua_pushcfunction(L, l_set_error_factory);
    lua_setfield(L, t, "set_error_factory");
    lua_pushliteral(L, "0.1.0");
    lua_setfield(L, t, "version");
    if (cp_l_codec_open) cp_l_codec_open(L, t);
    if (cp_l_messenger_open) cp_l_messenger_open(L, t);
    if (cp_l_process_open) cp_l_process_open(L, t);
    if (cp_l_monitor_open) cp_l_monitor_open(L, t);
    cp_l_batch_open(L, t);
    return 1;
}
