/* fuzz_codec.c: the msgpack -> Lua decoder (bindings/codec.c) on arbitrary
 * bytes, in both trust modes, with a round-trip check.
 *
 * For each mode: T1 = decode(input). When that succeeds, E1 = encode(T1),
 * T2 = decode(E1) and E2 = encode(T2). What the codec guarantees, and so
 * what is checked exactly:
 *   - T2 decodes (everything the encoder writes, the decoder reads), and E2
 *     encodes; E1 may fail only for a depth the new traversal order reaches
 *     (a shared table first met deeper) or a userdata a name resolved to;
 *   - T1 and T2 are the same value graph: types and number subtypes, string
 *     bytes, float bits, which tables and functions are shared and where the
 *     cycles are, metatables, array/map marks of empty tables, bytecode (as
 *     lua_dump writes it), which upvalues are shared, and the very same
 *     object for everything reached by name or as the globals table;
 *   - #E1 == #E2, and E1 == E2 byte for byte when no table is a map of two
 *     or more entries (map entries follow the table's traversal order, which
 *     depends on how the table was built: the only freedom the codec has).
 * Also: decode and decode_prefix agree on success; a failed decode leaves the
 * stack as it was; the codec never raises (a memory error aside); what
 * decodes in mode "data" decodes the same in mode "code".
 *
 * Nothing decoded ever runs. Mode "code" loads bytecode, which is never
 * called; two things could still run code or change values behind the
 * check's back: a __gc metamethod (at collection) and a __mode (weak
 * entries vanish at collection). Their names can only come from string
 * bytes in the input, so the target rewrites "__gc" and "__mode" in its copy
 * of the input before decoding, in both modes. `require` finds nothing
 * (package.path and cpath are empty), so a name only resolves to what is
 * loaded already.
 *
 * An input starting with 0xc1 (a byte msgpack never uses) is raw bytecode:
 * the target wraps it in a FUNC value with as many nil upvalues as its
 * header says, so the mutator works on the chunk without having to keep
 * two length fields right. */
#include "fuzz.h"
#include "codec.h"

#include <lauxlib.h>
#include <lualib.h>

#include <string.h>

static lua_State *L;
static int verbose; /* FUZZ_VERBOSE=1: one line per input and mode */
static int OLD; /* registry ref: every object that existed before fuzzing -> true */

/* ---- the objects that exist before any input ---- */

static void add_work(lua_State *S, int old, int work, lua_Integer *n, int v)
{
    int t = lua_type(S, v);
    if (t != LUA_TTABLE && t != LUA_TFUNCTION && t != LUA_TUSERDATA) return;
    lua_pushvalue(S, v);
    if (lua_rawget(S, old) != LUA_TNIL) { lua_pop(S, 1); return; }
    lua_pop(S, 1);
    lua_pushvalue(S, v);
    lua_pushboolean(S, 1);
    lua_rawset(S, old);
    lua_pushvalue(S, v);
    lua_rawseti(S, work, ++*n);
}

static void mark_old(lua_State *S)
{
    lua_newtable(S);
    int old = lua_gettop(S);
    lua_newtable(S);
    int work = lua_gettop(S);
    lua_Integer n = 0;
    lua_pushvalue(S, LUA_REGISTRYINDEX);
    add_work(S, old, work, &n, lua_gettop(S));
    lua_pop(S, 1);
    while (n > 0) {
        lua_rawgeti(S, work, n);
        lua_pushnil(S);
        lua_rawseti(S, work, n--);
        int v = lua_gettop(S);
        if (lua_getmetatable(S, v)) { add_work(S, old, work, &n, lua_gettop(S)); lua_pop(S, 1); }
        switch (lua_type(S, v)) {
        case LUA_TTABLE:
            lua_pushnil(S);
            while (lua_next(S, v)) {
                add_work(S, old, work, &n, lua_gettop(S) - 1);
                add_work(S, old, work, &n, lua_gettop(S));
                lua_pop(S, 1);
            }
            break;
        case LUA_TFUNCTION:
            for (int i = 1; lua_getupvalue(S, v, i); i++) {
                add_work(S, old, work, &n, lua_gettop(S));
                lua_pop(S, 1);
            }
            break;
        case LUA_TUSERDATA:
            for (int i = 1; lua_getiuservalue(S, v, i) != LUA_TNONE; i++) {
                add_work(S, old, work, &n, lua_gettop(S));
                lua_pop(S, 1);
            }
            lua_pop(S, 1);
            break;
        }
        lua_settop(S, v - 1);
    }
    lua_pop(S, 1);
    OLD = luaL_ref(S, LUA_REGISTRYINDEX);
}

static void close_state(void)
{
    lua_close(L); /* nothing decoded has a __gc left to run */
    L = NULL;
}

static void setup(void)
{
    const char *v = getenv("FUZZ_VERBOSE");
    verbose = v && *v && *v != '0';
    L = luaL_newstate();
    FUZZ_CHECK(L != NULL);
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "path");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
    mark_old(L);
    atexit(close_state);
}

/* ---- value graph comparison ---- */

enum { M_AB = 1, M_BA, U_AB, U_BA }; /* the four maps of a comparison */

typedef struct {
    int maps;          /* stack: table {M_AB = {}, ...} */
    int log;           /* stack: undo log, pairs (map, key) */
    lua_Integer nlog;
    int old;           /* stack: the OLD set */
    long budget;       /* comparisons left; below zero: give up (inconclusive) */
    int plain;         /* T1 is data through and through: encoded without names */
    int multimap;      /* a table with two or more map entries was met */
} iso_ctx;

static int old_obj(iso_ctx *x, int i)
{
    lua_pushvalue(L, i);
    int r = lua_rawget(L, x->old) != LUA_TNIL;
    lua_pop(L, 1);
    return r;
}

/* [-0, +1] Push maps[m][key at k]. */
static int get_map(iso_ctx *x, int m, int k)
{
    lua_rawgeti(L, x->maps, m);
    lua_pushvalue(L, k);
    int t = lua_rawget(L, -2);
    lua_remove(L, -2);
    return t;
}

static void put_map(iso_ctx *x, int m, int k, int v)
{
    lua_rawgeti(L, x->maps, m);
    lua_pushvalue(L, k);
    lua_pushvalue(L, v);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_pushinteger(L, m);
    lua_rawseti(L, x->log, ++x->nlog);
    lua_pushvalue(L, k);
    lua_rawseti(L, x->log, ++x->nlog);
}

static void undo(iso_ctx *x, lua_Integer to)
{
    while (x->nlog > to) {
        lua_rawgeti(L, x->log, x->nlog - 1);
        lua_rawgeti(L, x->maps, lua_tointeger(L, -1));
        lua_rawgeti(L, x->log, x->nlog);
        lua_pushnil(L);
        lua_rawset(L, -3);
        lua_pop(L, 2);
        lua_pushnil(L);
        lua_rawseti(L, x->log, x->nlog--);
        lua_pushnil(L);
        lua_rawseti(L, x->log, x->nlog--);
    }
}

static int iso(iso_ctx *x, int a, int b);

static int is_obj(int i)
{
    int t = lua_type(L, i);
    return t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA;
}

/* Compare a[ka] with b[kb] (keys at stack positions); 0 if b has no kb. */
static int iso_entry(iso_ctx *x, int a, int ka, int b, int kb)
{
    lua_pushvalue(L, ka);
    lua_rawget(L, a);
    lua_pushvalue(L, kb);
    int tb = lua_rawget(L, b);
    int r = tb == LUA_TNIL ? 0 : iso(x, lua_gettop(L) - 1, lua_gettop(L));
    lua_pop(L, 2);
    return r;
}

/* Pair the object keys of a that nothing mapped yet (list rem, 1..nr) with
 * those of b (list cand, 1..nr): depth-first search, undoing the mappings
 * of every failed try. */
static int match_keys(iso_ctx *x, int a, int b, int rem, int cand, int used, lua_Integer i, lua_Integer nr)
{
    if (i > nr) return 1;
    lua_rawgeti(L, rem, i);
    int ka = lua_gettop(L);
    int r = 0;
    if (get_map(x, M_AB, ka) != LUA_TNIL) { /* mapped meanwhile, deeper down */
        int kb = lua_gettop(L);
        for (lua_Integer j = 1; j <= nr; j++) {
            lua_rawgeti(L, cand, j);
            int same = lua_rawequal(L, -1, kb);
            lua_pop(L, 1);
            lua_rawgeti(L, used, j);
            int u = lua_toboolean(L, -1);
            lua_pop(L, 1);
            if (!same) continue;
            if (u) break;
            r = iso_entry(x, a, ka, b, kb);
            if (r == 1) {
                lua_pushboolean(L, 1);
                lua_rawseti(L, used, j);
                r = match_keys(x, a, b, rem, cand, used, i + 1, nr);
                if (r != 1) { lua_pushboolean(L, 0); lua_rawseti(L, used, j); }
            }
            break;
        }
        lua_settop(L, ka - 1);
        return r;
    }
    lua_pop(L, 1);
    for (lua_Integer j = 1; j <= nr && r != -1; j++) {
        lua_rawgeti(L, used, j);
        int u = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (u) continue;
        lua_rawgeti(L, cand, j);
        int kb = lua_gettop(L);
        lua_Integer save = x->nlog;
        r = iso(x, ka, kb);
        if (r == 1) r = iso_entry(x, a, ka, b, kb);
        if (r == 1) {
            lua_pushboolean(L, 1);
            lua_rawseti(L, used, j);
            r = match_keys(x, a, b, rem, cand, used, i + 1, nr);
            if (r == 1) { lua_settop(L, ka - 1); return 1; }
            lua_pushboolean(L, 0);
            lua_rawseti(L, used, j);
        }
        if (r != -1) { undo(x, save); r = 0; }
        lua_settop(L, kb - 1);
    }
    lua_settop(L, ka - 1);
    return r;
}

static int iso_table(iso_ctx *x, int a, int b)
{
    int base = lua_gettop(L);
    int ha = lua_getmetatable(L, a), hb = lua_getmetatable(L, b);
    int r = ha == hb;
    if (r && ha) r = iso(x, base + 1, base + 2);
    lua_settop(L, base);
    if (r != 1) return r;
    if (cp_codec_mark(L, a) != cp_codec_mark(L, b)) return 0;
    lua_Integer na = 0, nb = 0, seq = 1;
    lua_pushnil(L);
    while (lua_next(L, a)) {
        lua_pop(L, 1);
        na++;
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) seq = 0;
    }
    lua_pushnil(L);
    while (lua_next(L, b)) { lua_pop(L, 1); nb++; }
    if (na != nb) return 0;
    if (na >= 2 && !(seq && (lua_Integer)lua_rawlen(L, a) == na)) x->multimap = 1;
    /* Scalar keys and object keys already mapped: look them up in b. The
     * other object keys wait: comparing other entries may map them. */
    lua_newtable(L);
    int rem = lua_gettop(L);
    lua_Integer nr = 0;
    lua_pushnil(L);
    while (lua_next(L, a)) {
        int k = lua_gettop(L) - 1;
        lua_pop(L, 1);
        if (!is_obj(k)) r = iso_entry(x, a, k, b, k);
        else if (get_map(x, M_AB, k) != LUA_TNIL) r = iso_entry(x, a, k, b, lua_gettop(L)), lua_pop(L, 1);
        else { lua_pop(L, 1); lua_pushvalue(L, k); lua_rawseti(L, rem, ++nr); r = 1; }
        if (r != 1) { lua_settop(L, base); return r; }
    }
    /* Keys mapped since they were put aside: compare them now, until no
     * comparison maps another. */
    for (int progress = 1; progress && nr > 0;) {
        progress = 0;
        for (lua_Integer i = 1; i <= nr; i++) {
            lua_rawgeti(L, rem, i);
            int k = lua_gettop(L);
            if (get_map(x, M_AB, k) != LUA_TNIL) {
                r = iso_entry(x, a, k, b, k + 1);
                if (r != 1) { lua_settop(L, base); return r; }
                lua_rawgeti(L, rem, nr); /* the last one takes its place */
                lua_rawseti(L, rem, i);
                lua_pushnil(L);
                lua_rawseti(L, rem, nr--);
                i--;
                progress = 1;
            }
            lua_settop(L, k - 1);
        }
    }
    if (nr == 0) { lua_settop(L, base); return 1; }
    lua_newtable(L);
    int cand = lua_gettop(L);
    lua_newtable(L);
    int used = lua_gettop(L);
    lua_Integer nc = 0;
    lua_pushnil(L);
    while (lua_next(L, b)) {
        int k = lua_gettop(L) - 1;
        lua_pop(L, 1);
        if (!is_obj(k)) continue;
        int t = get_map(x, M_BA, k);
        lua_pop(L, 1);
        if (t != LUA_TNIL) continue;
        lua_pushvalue(L, k);
        lua_rawseti(L, cand, ++nc);
        lua_pushboolean(L, 0);
        lua_rawseti(L, used, nc);
    }
    /* A key of b mapped from something that is not a key of a leaves the
     * counts unequal. */
    r = nc != nr ? 0 : match_keys(x, a, b, rem, cand, used, 1, nr);
    lua_settop(L, base);
    return r;
}

typedef struct { char *p; size_t n, cap; } dump_buf;

static int dump_writer(lua_State *S, const void *p, size_t sz, void *ud)
{
    (void)S;
    dump_buf *d = ud;
    if (d->n + sz > d->cap) {
        size_t cap = (d->n + sz) * 2;
        char *np = realloc(d->p, cap);
        if (!np) return 1;
        d->p = np;
        d->cap = cap;
    }
    memcpy(d->p + d->n, p, sz);
    d->n += sz;
    return 0;
}

static int iso_function(iso_ctx *x, int a, int b)
{
    if (lua_iscfunction(L, a) || lua_iscfunction(L, b)) return 0; /* C functions only by name: rawequal */
    dump_buf da = {0}, db = {0};
    lua_pushvalue(L, a);
    FUZZ_CHECK(lua_dump(L, dump_writer, &da, 0) == 0);
    lua_pop(L, 1);
    lua_pushvalue(L, b);
    FUZZ_CHECK(lua_dump(L, dump_writer, &db, 0) == 0);
    lua_pop(L, 1);
    int r = da.n == db.n && memcmp(da.p, db.p, da.n) == 0;
    free(da.p);
    free(db.p);
    if (!r) return 0;
    lua_Debug aa, ab;
    lua_pushvalue(L, a);
    lua_getinfo(L, ">u", &aa);
    lua_pushvalue(L, b);
    lua_getinfo(L, ">u", &ab);
    if (aa.nups != ab.nups) return 0;
    for (int i = 1; i <= aa.nups; i++) {
        lua_pushlightuserdata(L, lua_upvalueid(L, a, i));
        lua_pushlightuserdata(L, lua_upvalueid(L, b, i));
        int ia = lua_gettop(L) - 1, ib = ia + 1;
        if (get_map(x, U_AB, ia) != LUA_TNIL) { /* a variable met before: the same one in b */
            r = lua_rawequal(L, -1, ib);
            lua_settop(L, ia - 1);
            if (!r) return 0;
            continue;
        }
        lua_pop(L, 1);
        int t = get_map(x, U_BA, ib);
        lua_pop(L, 1);
        if (t != LUA_TNIL) { lua_settop(L, ia - 1); return 0; }
        put_map(x, U_AB, ia, ib);
        put_map(x, U_BA, ib, ia);
        FUZZ_CHECK(lua_getupvalue(L, a, i) != NULL);
        FUZZ_CHECK(lua_getupvalue(L, b, i) != NULL);
        r = iso(x, ib + 1, ib + 2);
        lua_settop(L, ia - 1);
        if (r != 1) return r;
    }
    return 1;
}

/* 1 the same value graph, 0 different, -1 gave up. */
static int iso(iso_ctx *x, int a, int b)
{
    if (--x->budget < 0) return -1;
    FUZZ_CHECK(lua_checkstack(L, 24));
    a = lua_absindex(L, a);
    b = lua_absindex(L, b);
    int t = lua_type(L, a);
    if (t != lua_type(L, b)) return 0;
    switch (t) {
    case LUA_TNIL: return 1;
    case LUA_TBOOLEAN: return lua_toboolean(L, a) == lua_toboolean(L, b);
    case LUA_TNUMBER:
        if (lua_isinteger(L, a) != lua_isinteger(L, b)) return 0;
        if (lua_isinteger(L, a)) return lua_tointeger(L, a) == lua_tointeger(L, b);
        else {
            lua_Number fa = lua_tonumber(L, a), fb = lua_tonumber(L, b);
            return memcmp(&fa, &fb, sizeof fa) == 0;
        }
    case LUA_TSTRING: {
        size_t la, lb;
        const char *sa = lua_tolstring(L, a, &la), *sb = lua_tolstring(L, b, &lb);
        return la == lb && memcmp(sa, sb, la) == 0;
    }
    case LUA_TLIGHTUSERDATA: return lua_touserdata(L, a) == lua_touserdata(L, b);
    case LUA_TTABLE: case LUA_TFUNCTION: {
        if (lua_rawequal(L, a, b)) return 1;
        /* What was reached by name must arrive as the very object, unless
         * the whole value is plain data, which is copied (a module's data
         * table included). */
        if (!x->plain && (old_obj(x, a) || old_obj(x, b))) return 0;
        int tm = get_map(x, M_AB, a);
        int r = lua_rawequal(L, -1, b);
        lua_pop(L, 1);
        if (tm != LUA_TNIL) return r;
        tm = get_map(x, M_BA, b);
        lua_pop(L, 1);
        if (tm != LUA_TNIL) return 0;
        put_map(x, M_AB, a, b);
        put_map(x, M_BA, b, a);
        return t == LUA_TTABLE ? iso_table(x, a, b) : iso_function(x, a, b);
    }
    default: return lua_rawequal(L, a, b);
    }
}

/* Does the value at v reach a function, a metatable or a userdata? */
static int has_code(int v)
{
    int top = lua_gettop(L);
    lua_newtable(L);
    int seen = top + 1;
    lua_newtable(L);
    int work = top + 2;
    lua_Integer n = 0;
    lua_pushvalue(L, v);
    lua_rawseti(L, work, ++n);
    int found = 0;
    while (n > 0 && !found) {
        lua_rawgeti(L, work, n);
        lua_pushnil(L);
        lua_rawseti(L, work, n--);
        int o = lua_gettop(L);
        int t = lua_type(L, o);
        if (t == LUA_TFUNCTION || t == LUA_TUSERDATA) found = 1;
        else if (t == LUA_TTABLE) {
            lua_pushvalue(L, o);
            int met = lua_rawget(L, seen) != LUA_TNIL;
            lua_pop(L, 1);
            if (!met) {
                lua_pushvalue(L, o);
                lua_pushboolean(L, 1);
                lua_rawset(L, seen);
                if (lua_getmetatable(L, o)) found = 1;
                lua_pushnil(L);
                while (!found && lua_next(L, o)) {
                    lua_pushvalue(L, -2);
                    lua_rawseti(L, work, ++n);
                    lua_rawseti(L, work, ++n);
                }
            }
        }
        lua_settop(L, o - 1);
    }
    lua_settop(L, top);
    return found;
}

/* [-0, +0] Compare the values at a and b (b decoded from the encoding of
 * a); *multimap set as described. */
static int same_graph(int a, int b, int *multimap)
{
    int top = lua_gettop(L);
    iso_ctx x;
    lua_createtable(L, 4, 0);
    x.maps = lua_gettop(L);
    for (int i = M_AB; i <= U_BA; i++) { lua_newtable(L); lua_rawseti(L, x.maps, i); }
    lua_newtable(L);
    x.log = lua_gettop(L);
    x.nlog = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, OLD);
    x.old = lua_gettop(L);
    x.budget = 200000;
    x.multimap = 0;
    x.plain = !has_code(a);
    int r = iso(&x, a, b);
    *multimap = x.multimap;
    lua_settop(L, top);
    return r;
}

/* ---- one input ---- */

/* The array count of a top-level msgpack array, or -1. */
static long array_count(const unsigned char *p, size_t n)
{
    if (n >= 1 && p[0] >= 0x90 && p[0] <= 0x9f) return p[0] & 0x0f;
    if (n >= 3 && p[0] == 0xdc) return (long)p[1] << 8 | p[2];
    if (n >= 5 && p[0] == 0xdd) return (long)((unsigned long)p[1] << 24 | (unsigned long)p[2] << 16 | (unsigned long)p[3] << 8 | p[4]);
    return -1;
}

typedef struct {
    const char *in;
    size_t n;
    int data_ok;     /* the value decoded in mode "data" is at stack index data_ok, or 0 */
} job;

static void check_mode(job *j, cp_trust trust)
{
    char err[CP_CODEC_ERRLEN], err2[CP_CODEC_ERRLEN];
    int top = lua_gettop(L);
    int rc = cp_codec_decode_trust(L, j->in, j->n, trust, err, sizeof err);
    FUZZ_CHECK(lua_gettop(L) == top + (rc == 0));
    FUZZ_CHECK(rc == 0 || err[0] != 0);
    int t1 = rc == 0 ? top + 1 : 0;

    lua_Integer bad = -1;
    int rp = cp_codec_decode_prefix(L, j->in, j->n, trust, &bad, err2, sizeof err2);
    FUZZ_CHECK(lua_gettop(L) == top + (rc == 0) + 1);
    FUZZ_CHECK((rp == 0) == (rc == 0));
    FUZZ_CHECK(rp == 0 ? bad == 0 : bad >= 1);
    long cnt = array_count((const unsigned char *)j->in, j->n);
    if (rp == 0 && cnt >= 0) {
        lua_getfield(L, -1, "n");
        FUZZ_CHECK(lua_tointeger(L, -1) == cnt);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    if (trust == CP_TRUST_CODE && j->data_ok) {
        int mm;
        FUZZ_CHECK(rc == 0); /* data decodes in mode "code" too, to the same */
        FUZZ_CHECK(same_graph(j->data_ok, t1, &mm) != 0);
    }
    const char *mode = trust == CP_TRUST_DATA ? "data" : "code";
    if (rc) {
        if (verbose) fprintf(stderr, "%s: decode refused: %s\n", mode, err);
        return;
    }
    if (trust == CP_TRUST_DATA) j->data_ok = t1;

    cp_buf e1 = CP_BUF_INIT, e2 = CP_BUF_INIT;
    if (cp_codec_encode(L, t1, &e1, err, sizeof err)) {
        FUZZ_CHECK(lua_gettop(L) == t1);
        if (verbose) fprintf(stderr, "%s: decoded, re-encode refused: %s\n", mode, err);
        FUZZ_CHECK(strstr(err, "nested deeper than") != NULL ||
                   (trust == CP_TRUST_CODE && strstr(err, "cannot send a userdata") != NULL));
        cp_buf_free(&e1);
        return;
    }
    FUZZ_CHECK(lua_gettop(L) == t1);
    rc = cp_codec_decode_trust(L, cp_buf_head(&e1), cp_buf_size(&e1), trust, err, sizeof err);
    if (rc) fprintf(stderr, "re-decode failed: %s\n", err);
    FUZZ_CHECK(rc == 0);
    int t2 = lua_gettop(L);
    int multimap = 0;
    int same = same_graph(t1, t2, &multimap);
    FUZZ_CHECK(same != 0);
    FUZZ_CHECK(cp_codec_encode(L, t2, &e2, err, sizeof err) == 0);
    FUZZ_CHECK(cp_buf_size(&e1) == cp_buf_size(&e2));
    if (verbose)
        fprintf(stderr, "%s: round trip of %zu bytes, graphs %s, %s\n", mode, cp_buf_size(&e1),
                same == 1 ? "the same" : "not compared (too large)",
                multimap ? "maps of 2+ entries (sizes compared)" : "compared byte for byte");
    if (same == 1 && !multimap)
        FUZZ_CHECK(memcmp(cp_buf_head(&e1), cp_buf_head(&e2), cp_buf_size(&e1)) == 0);
    cp_buf_free(&e1);
    cp_buf_free(&e2);
    lua_settop(L, t1);
}

static int run(lua_State *S)
{
    job *j = lua_touserdata(S, 1);
    lua_settop(S, 0);
    check_mode(j, CP_TRUST_DATA);
    check_mode(j, CP_TRUST_CODE);
    return 0;
}

/* FUNC [bin32 bytecode, nil * nups] around the chunk b[0..n). */
static char *wrap_bytecode(const uint8_t *b, size_t n, size_t *out)
{
    unsigned nups = n > 31 ? b[31] : 0;
    size_t arr = nups + 1 < 16 ? 1 : 3;
    size_t body = arr + 5 + n + nups;
    char *p = malloc(6 + body);
    FUZZ_CHECK(p != NULL);
    unsigned char *o = (unsigned char *)p;
    *o++ = 0xc9;
    for (int i = 3; i >= 0; i--) *o++ = (unsigned char)(body >> (8 * i));
    *o++ = 2;
    if (arr == 1) *o++ = (unsigned char)(0x90 | (nups + 1));
    else { *o++ = 0xdc; *o++ = (unsigned char)((nups + 1) >> 8); *o++ = (unsigned char)(nups + 1); }
    *o++ = 0xc6;
    for (int i = 3; i >= 0; i--) *o++ = (unsigned char)(n >> (8 * i));
    memcpy(o, b, n);
    memset(o + n, 0xc0, nups);
    *out = 6 + body;
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned long runs;
    if (size > (64u << 10)) return 0;
    if (!L) setup();
    char *in;
    if (size >= 1 && data[0] == 0xc1) {
        in = wrap_bytecode(data + 1, size - 1, &size);
    } else {
        in = malloc(size ? size : 1);
        FUZZ_CHECK(in != NULL);
        memcpy(in, data, size);
    }
    for (size_t i = 0; i + 4 <= size; i++) {
        if (memcmp(in + i, "__gc", 4) == 0) in[i + 3] = 'C';
        if (i + 6 <= size && memcmp(in + i, "__mode", 6) == 0) in[i + 5] = 'E';
    }
    job j = {in, size, 0};
    lua_pushcfunction(L, run);
    lua_pushlightuserdata(L, &j);
    int st = lua_pcall(L, 1, 0, 0);
    if (st != LUA_OK) fprintf(stderr, "the codec raised: %s\n", lua_tostring(L, -1));
    FUZZ_CHECK(st == LUA_OK); /* only a memory error may raise, and none is expected */
    FUZZ_CHECK(lua_gettop(L) == 0);
    free(in);
    if (++runs % 512 == 0) lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
