/* l_codec.c: core.encode / core.decode (and, via cp_codec_open, core.null,
 * core.array, core.map). The codec itself is codec.c. */
#include "codec.h"
#include "lcore.h"

#include <string.h>

#define ENCBUF_KEEP (64 * 1024) /* keep a scratch buffer up to this size between calls */

static int l_encbuf_gc(lua_State *L)
{
    cp_buf_free((cp_buf *)lua_touserdata(L, 1));
    return 0;
}

/* core.encode(v) -> string. Raises EncodeError. */
static int l_encode(lua_State *L)
{
    cp_buf *b = lua_touserdata(L, lua_upvalueindex(1));
    char err[CP_CODEC_ERRLEN];
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    b->start = b->len = 0;
    if (cp_codec_encode(L, 1, b, err, sizeof err))
        return cp_l_error(L, "EncodeError", "%s", err);
    lua_pushlstring(L, cp_buf_head(b), cp_buf_size(b));
    if (b->cap > ENCBUF_KEEP) cp_buf_free(b);
    return 1;
}

/* The options of decode and decode_prefix: {trust = "code"|"data"}. */
static cp_trust opt_trust(lua_State *L, int i)
{
    if (lua_isnoneornil(L, i)) return CP_TRUST_CODE;
    luaL_checktype(L, i, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, i)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "trust") != 0)
            return luaL_argerror(L, i, lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL)));
    }
    lua_getfield(L, i, "trust");
    cp_trust t = cp_l_checktrust(L, -1);
    lua_pop(L, 1);
    return t;
}

/* core.decode(s [, {trust = "code"|"data"}]) -> value. Raises ProtocolError
 * on malformed input and, in trust mode "data", on code from the peer. */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    cp_trust trust = opt_trust(L, 2);
    char err[CP_CODEC_ERRLEN];
    lua_settop(L, 1);
    if (cp_codec_decode_trust(L, s, len, trust, err, sizeof err))
        return cp_l_error(L, "ProtocolError", "%s", err);
    return 1;
}

/* core.decode_prefix(s [, opts]) -> values | values, bad_index, message.
 * For a top-level array, values holds the elements that decoded (with n);
 * bad_index is the element that did not. Any other value: as decode, but
 * nil, 1, message instead of raising. */
static int l_decode_prefix(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    cp_trust trust = opt_trust(L, 2);
    char err[CP_CODEC_ERRLEN];
    lua_settop(L, 1);
    lua_Integer bad;
    if (cp_codec_decode_prefix(L, s, len, trust, &bad, err, sizeof err) == 0) return 1;
    lua_pushinteger(L, bad);
    lua_pushstring(L, err);
    return 3;
}

/* core.decode_into(s, t, base, first [, limit [, opts]]) -> v1..v_(first-1), count
 * | nil, bad_index, message. s is a msgpack array: its elements 1..first-1
 * are returned, and elements i = first, first+1, ... (at most limit, all by
 * default) are decoded straight into t[base + i]. With t nil only the head
 * is decoded. count is the array's element count. On a failure the
 * elements stored before bad_index stay in t. opts as decode's (trust). */
static int l_decode_into(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    cp_codec_into in;
    in.t = 0;
    if (!lua_isnil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        in.t = 2;
    }
    in.base = luaL_checkinteger(L, 3);
    lua_Integer first = luaL_checkinteger(L, 4);
    luaL_argcheck(L, first >= 1 && first <= 250, 4, "head size out of range (1..250)");
    in.first = (int)first;
    in.limit = luaL_optinteger(L, 5, LUA_MAXINTEGER);
    luaL_argcheck(L, in.limit >= 0, 5, "negative limit");
    cp_trust trust = opt_trust(L, 6);
    lua_settop(L, 2);
    char err[CP_CODEC_ERRLEN];
    if (cp_codec_decode_into(L, s, len, trust, &in, err, sizeof err) == 0) {
        lua_pushinteger(L, in.count);
        return in.first;
    }
    lua_pushnil(L);
    lua_pushinteger(L, in.bad);
    lua_pushstring(L, err);
    return 3;
}

cp_trust cp_l_checktrust(lua_State *L, int i)
{
    if (lua_isnoneornil(L, i)) return CP_TRUST_CODE;
    const char *s = lua_tostring(L, i);
    if (s && strcmp(s, "code") == 0) return CP_TRUST_CODE;
    if (s && strcmp(s, "data") == 0) return CP_TRUST_DATA;
    return (cp_trust)luaL_error(L, "unknown trust mode '%s' (expected 'code' or 'data')",
                                s ? s : luaL_typename(L, i));
}

const char *cp_l_trustname(cp_trust t)
{
    return t == CP_TRUST_DATA ? "data" : "code";
}

void cp_l_codec_open(lua_State *L, int t)
{
    t = lua_absindex(L, t);
    cp_codec_open(L, t);
    /* One scratch buffer per state, freed with it (an internal type, so
     * no methods; made the one way every type is). */
    static const luaL_Reg no_methods[] = {{NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", l_encbuf_gc}, {"__close", l_encbuf_gc}, {NULL, NULL}};
    cp_l_newclass(L, "coproc.EncodeBuffer", no_methods, meta, 0);
    cp_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
    *b = (cp_buf)CP_BUF_INIT;
    luaL_setmetatable(L, "coproc.EncodeBuffer");
    lua_pushcclosure(L, l_encode, 1);
    lua_setfield(L, t, "encode");
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, t, "decode");
    lua_pushcfunction(L, l_decode_prefix);
    lua_setfield(L, t, "decode_prefix");
    lua_pushcfunction(L, l_decode_into);
    lua_setfield(L, t, "decode_into");
}
