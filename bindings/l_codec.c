/* l_codec.c: core.encode / core.decode (and, via cp_codec_open, core.null,
 * core.array, core.map). The codec itself is codec.c. */
#include "codec.h"
#include "lcore.h"

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

/* core.decode(s) -> value. Raises ProtocolError on malformed input. */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char err[CP_CODEC_ERRLEN];
    lua_settop(L, 1);
    if (cp_codec_decode(L, s, len, err, sizeof err))
        return cp_l_error(L, "ProtocolError", "%s", err);
    return 1;
}

void cp_l_codec_open(lua_State *L, int t)
{
    t = lua_absindex(L, t);
    cp_codec_open(L, t);
    /* One scratch buffer per state, freed with it. */
    cp_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
    *b = (cp_buf)CP_BUF_INIT;
    if (luaL_newmetatable(L, "coproc.EncodeBuffer")) {
        lua_pushcfunction(L, l_encbuf_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, l_encode, 1);
    lua_setfield(L, t, "encode");
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, t, "decode");
}
