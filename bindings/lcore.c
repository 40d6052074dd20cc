/* lcore.c: see lcore.h. Linked into every C module of coproc (coproc.core,
 * coproc.plot), so what it keeps per state is under a string key of the
 * registry that all copies share. */
#include "lcore.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void push_error_v(lua_State *L, const char *cls, const char *fmt, va_list ap)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, cls);
    lua_setfield(L, -2, "class");
    lua_pushvfstring(L, fmt, ap);
    lua_setfield(L, -2, "message");
}

void cp_l_pusherror(lua_State *L, const char *cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    push_error_v(L, cls, fmt, ap);
    va_end(ap);
}

/* __tostring of an error raised before coproc.errors gave the factory
 * (only coproc.core loaded): "Class: message". */
static int plain_tostring(lua_State *L)
{
    lua_getfield(L, 1, "class");
    lua_getfield(L, 1, "message");
    lua_pushfstring(L, "%s: %s", luaL_optstring(L, -2, "Error"), luaL_optstring(L, -1, "?"));
    return 1;
}

void cp_l_finish_error(lua_State *L)
{
    /* Pass the plain table through the factory so it gets its class and
     * __tostring; without one (or if it fails) it still reads well. */
    if (lua_getfield(L, LUA_REGISTRYINDEX, CP_L_ERROR_FACTORY) == LUA_TFUNCTION) {
        lua_pushvalue(L, -2);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && !lua_isnil(L, -1)) {
            lua_remove(L, -2);
            return;
        }
    }
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TTABLE && !lua_getmetatable(L, -1)) {
        if (luaL_newmetatable(L, "coproc.PlainError")) {
            lua_pushcfunction(L, plain_tostring);
            lua_setfield(L, -2, "__tostring");
        }
        lua_setmetatable(L, -2);
    } else if (lua_type(L, -1) == LUA_TTABLE) {
        lua_pop(L, 1);
    }
}

int cp_l_raise(lua_State *L)
{
    cp_l_finish_error(L);
    return lua_error(L);
}

int cp_l_error(lua_State *L, const char *cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    push_error_v(L, cls, fmt, ap);
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

int cp_l_oserror(lua_State *L, int err, const char *call, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    const char *what = lua_tostring(L, -1);
    cp_l_pusherror(L, "OSError", "%s: %s", what, strerror(err));
    lua_pushinteger(L, err);
    lua_setfield(L, -2, "errno");
    lua_pushstring(L, call);
    lua_setfield(L, -2, "call");
    return cp_l_raise(L);
}

int cp_l_msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    if (lua_type(L, 1) == LUA_TTABLE && lua_getfield(L, 1, "traceback") == LUA_TSTRING && lua_rawlen(L, -1) > 0) {
        lua_pushliteral(L, "\nworker traceback:\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    } else if (lua_type(L, 1) == LUA_TTABLE) {
        lua_pop(L, 1);
    }
    return 1;
}
