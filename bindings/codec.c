/* codec.c: Lua values <-> msgpack bytes. See codec.h; the wire mapping is
 * documented in docs/protocol.md ("Values").
 *
 * Encoding runs in up to two passes. The plain pass handles data only (nil,
 * booleans, numbers, strings, tables without metatables) and touches no Lua
 * table besides the value itself: shared tables are tracked in a small C
 * pointer set. When it meets a function or a metatable it gives up, the
 * buffer is cut back, and the rich pass starts over with the name index
 * (values reachable from package.loaded) at hand. So plain data never pays
 * for names, and a value is encoded the same way whatever came before it.
 *
 * Decoding is one bounds-checked pass. Decoded objects are numbered (kept in
 * a Lua table) only when the value has back-references: the first one met
 * without that table makes the decoder start over with it. */
#include "codec.h"
#include "bigendian.h"
#include "bytecode.h"

#include <lauxlib.h>
#include <msgpack.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* msgpack ext types used on the wire (docs/protocol.md). */
enum {
    EXT_REF = 1,     /* fixext4: u32 object number met before */
    EXT_FUNC = 2,    /* ext32: [bytecode, upvalue...] */
    EXT_UPREF = 3,   /* fixext8: u32 function object number, u32 upvalue index */
    EXT_NAME = 4,    /* ext32: [module, key|nil] */
    EXT_GLOBALS = 5, /* fixext1: the globals table of the receiver */
    EXT_META = 6     /* ext32: [table body, metatable] */
};

static const char MARKS_KEY = 'm'; /* registry: weak table -> true(array)/false(map) */
static const char INDEX_KEY = 'i'; /* registry: cached name index */


/* Set once any state of the process made a marks table: until then an
 * encode looks up no marks (a registry lookup per message, one per table). */
static int g_marks_made;

/* [-0, +1, m] Push the weak marks table, creating it on first use. */
static void push_marks(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &MARKS_KEY) == LUA_TTABLE) return;
    lua_pop(L, 1);
    g_marks_made = 1;
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &MARKS_KEY);
}

/* ---------------------------------------------------------------------
 * Pointer set: object address -> number. The first PSET_SMALL entries live
 * in a list inside the encoder (nothing to clear, most values have few
 * tables); past that, an open-addressing hash table in C memory, so growing
 * it never raises a Lua error (the encoder frees it on every path). */

#define PSET_SMALL 8

typedef struct { const void *k; uint64_t v; } pslot;

typedef struct {
    pslot *s;      /* hash table (cap slots, malloc'd), or NULL while small */
    size_t cap, n;
    pslot small[PSET_SMALL];
} pset;

static size_t phash(const void *k, size_t cap)
{
    uint64_t h = (uint64_t)(uintptr_t)k * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 29) & (cap - 1);
}

static pslot *pset_probe(pslot *s, size_t cap, const void *k)
{
    size_t i = phash(k, cap);
    while (s[i].k != k && s[i].k != NULL) i = (i + 1) & (cap - 1);
    return &s[i];
}

/* The slot of k, or NULL if absent. */
static pslot *pset_get(pset *ps, const void *k)
{
    if (!ps->s) {
        for (size_t i = 0; i < ps->n; i++)
            if (ps->small[i].k == k) return &ps->small[i];
        return NULL;
    }
    pslot *s = pset_probe(ps->s, ps->cap, k);
    return s->k ? s : NULL;
}

/* Add k (known absent). Returns 0, or -1 when out of memory. */
static int pset_add(pset *ps, const void *k, uint64_t v)
{
    if (!ps->s && ps->n < PSET_SMALL) {
        ps->small[ps->n++] = (pslot){k, v};
        return 0;
    }
    if (!ps->s || (ps->n + 1) * 2 > ps->cap) {
        size_t ncap = ps->s ? ps->cap * 2 : 4 * PSET_SMALL;
        pslot *ns = calloc(ncap, sizeof *ns);
        if (!ns) return -1;
        if (ps->s) {
            for (size_t i = 0; i < ps->cap; i++)
                if (ps->s[i].k) *pset_probe(ns, ncap, ps->s[i].k) = ps->s[i];
        } else {
            for (size_t i = 0; i < ps->n; i++)
                *pset_probe(ns, ncap, ps->small[i].k) = ps->small[i];
        }
        free(ps->s);
        ps->s = ns;
        ps->cap = ncap;
    }
    *pset_probe(ps->s, ps->cap, k) = (pslot){k, v};
    ps->n++;
    return 0;
}

static void pset_init(pset *ps)
{
    ps->s = NULL;
    ps->cap = ps->n = 0;
}

static void pset_free(pset *ps)
{
    free(ps->s);
    pset_init(ps);
}

/* ---------------------------------------------------------------------
 * Encoder */

/* How the value at some depth was reached from its parent (for errors). */
enum { PC_NONE, PC_INDEX, PC_KEY, PC_ASKEY, PC_UPVAL, PC_META };
typedef struct {
    unsigned char kind;
    int idx;           /* PC_KEY: stack index of the key */
    lua_Integer i;     /* PC_INDEX */
    const char *name;  /* PC_UPVAL */
} pathc;

struct enc_what;

typedef struct {
    lua_State *L;
    cp_buf *b;
    const struct enc_what *what; /* what encode_run was asked to write */
    msgpack_packer pk;
    int rich;     /* names, functions, metatables allowed (second pass) */
    int restart;  /* plain pass met something only the rich pass handles */
    int failed;   /* err holds a message */
    int marks;    /* stack index of the marks table, 0 if none exists */
    int index;    /* rich: stack index of the name index */
    int globals;  /* rich: stack index of the globals table */
    int gc_held;  /* rich: the pass stopped the collector (enc_hold_gc) */
    uint32_t nobj;     /* objects numbered so far */
    uint32_t lastobj;  /* number given by the last enc_seen */
    pset seen, ups;
    char *err;
    size_t errlen;
    pathc path[CP_CODEC_MAX_DEPTH + 4];
} enc;

/* The rich pass may allocate Lua objects only in a few places (building
 * the name index, naming a userdata's type); a collection step there could
 * run a __gc that sends or flushes while the buffer holds a partial value.
 * So the collector is stopped just before those, and started again after
 * the pass. Not on every rich pass: starting it again resets its debt
 * (LUA_GCRESTART), so the next allocation runs a step. A step per function
 * encoded made each pool:submit cost a collection (in generational mode a
 * minor one, which re-traverses every touched old table, such as a list of
 * the futures kept): O(heap) per send. */
static void enc_hold_gc(enc *e)
{
    if (!e->gc_held && lua_gc(e->L, LUA_GCISRUNNING)) {
        e->gc_held = 1;
        lua_gc(e->L, LUA_GCSTOP);
    }
}

static void app(char *o, size_t n, size_t *w, const char *fmt, ...)
{
    if (*w + 1 >= n) return;
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(o + *w, n - *w, fmt, ap);
    va_end(ap);
    if (r > 0) *w = (size_t)r >= n - *w ? n - 1 : *w + (size_t)r;
}

static int same_step(lua_State *L, const pathc *a, const pathc *b)
{
    if (a->kind != b->kind) return 0;
    switch (a->kind) {
    case PC_INDEX: return a->i == b->i;
    case PC_UPVAL: return (a->name && b->name) ? strcmp(a->name, b->name) == 0 : a->name == b->name;
    case PC_KEY: return lua_rawequal(L, a->idx, b->idx);
    default: return 1;
    }
}

/* Record an error: message plus where it happened ("(at ["a"][2])"). */
static int enc_fail(enc *e, int depth, const char *fmt, ...)
{
    e->failed = 1;
    if (!e->errlen) return -1;
    char *o = e->err;
    size_t n = e->errlen, w = 0;
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(o, n, fmt, ap);
    va_end(ap);
    if (r < 0) { o[0] = 0; r = 0; }
    w = (size_t)r >= n ? n - 1 : (size_t)r;
    /* The path, a run of one step repeated written once with its count:
     * "(at <upvalue g>*99)", "([1]*200)". */
    lua_State *L = e->L;
    int steps[CP_CODEC_MAX_DEPTH + 4], ns = 0;
    for (int d = 1; d <= depth && d < CP_CODEC_MAX_DEPTH + 4; d++)
        if (e->path[d].kind != PC_NONE) steps[ns++] = d;
    if (ns) app(o, n, &w, " (at ");
    for (int k = 0; k < ns;) {
        const pathc *c = &e->path[steps[k]];
        int run = 1;
        while (k + run < ns && same_step(L, c, &e->path[steps[k + run]])) run++;
        switch (c->kind) {
        case PC_INDEX: app(o, n, &w, "[%lld]", (long long)c->i); break;
        case PC_ASKEY: app(o, n, &w, "<key>"); break;
        case PC_UPVAL: app(o, n, &w, "<upvalue %s>", c->name && *c->name ? c->name : "?"); break;
        case PC_META: app(o, n, &w, "<metatable>"); break;
        case PC_KEY:
            switch (lua_type(L, c->idx)) {
            case LUA_TSTRING: app(o, n, &w, "[\"%.40s\"]", lua_tostring(L, c->idx)); break;
            case LUA_TNUMBER:
                if (lua_isinteger(L, c->idx)) app(o, n, &w, "[%lld]", (long long)lua_tointeger(L, c->idx));
                else app(o, n, &w, "[%.14g]", lua_tonumber(L, c->idx));
                break;
            case LUA_TBOOLEAN: app(o, n, &w, "[%s]", lua_toboolean(L, c->idx) ? "true" : "false"); break;
            default: app(o, n, &w, "[<%s>]", luaL_typename(L, c->idx)); break;
            }
            break;
        }
        if (run > 2) app(o, n, &w, "*%d", run);
        else run = 1; /* two alike are written out */
        k += run;
    }
    if (ns) app(o, n, &w, ")");
    return -1;
}

static int enc_oom(enc *e) { return enc_fail(e, 0, "out of memory while encoding"); }

static int pk_write(void *data, const char *buf, size_t len)
{
    cp_buf *b = data;
    if (b->cap - b->len >= len) { /* the common case, without a call */
        memcpy(b->data + b->len, buf, len);
        b->len += len;
        return 0;
    }
    return cp_buf_append(b, buf, len) ? -1 : 0;
}

/* Position relative to the unconsumed head: stays valid if the buffer compacts. */
static size_t enc_pos(enc *e) { return cp_buf_size(e->b); }
static unsigned char *enc_at(enc *e, size_t pos) { return (unsigned char *)e->b->data + e->b->start + pos; }

static int enc_raw(enc *e, const void *p, size_t n)
{
    return cp_buf_append(e->b, p, n) ? enc_oom(e) : 0;
}

/* ext32 with a length patched in by enc_ext_end. */
static int enc_ext_begin(enc *e, int type, size_t *pos)
{
    unsigned char h[6] = {0xc9, 0, 0, 0, 0, (unsigned char)type};
    *pos = enc_pos(e);
    return enc_raw(e, h, sizeof h);
}

static void enc_ext_end(enc *e, size_t pos)
{
    cp_put_be32(enc_at(e, pos) + 1, (uint32_t)(enc_pos(e) - pos - 6));
}

static int enc_fixext(enc *e, int type, const unsigned char *payload, size_t n)
{
    unsigned char h[10];
    h[0] = n == 1 ? 0xd4 : n == 4 ? 0xd6 : 0xd7;
    h[1] = (unsigned char)type;
    memcpy(h + 2, payload, n);
    return enc_raw(e, h, 2 + n);
}

static int enc_value(enc *e, int idx, int depth);

/* Every level of a table holds at most 3 slots (a metatable, a key and a
 * value) and a few more for a moment, a function by value one (the upvalue
 * being encoded): 8 free slots per level suffice. */
#define ENC_SLOTS 8

/* Number a table or function on first sight; on a later sight write a
 * back-reference. Returns 1 if a REF was written, 0 if new, -1 on error. */
static int enc_seen(enc *e, int idx)
{
    const void *p = lua_topointer(e->L, idx);
    pslot *s = pset_get(&e->seen, p);
    if (s) {
        unsigned char pl[4];
        cp_put_be32(pl, (uint32_t)s->v);
        return enc_fixext(e, EXT_REF, pl, 4) ? -1 : 1;
    }
    e->lastobj = e->nobj++;
    return pset_add(&e->seen, p, e->lastobj) ? enc_oom(e) : 0;
}

/* Rich pass: write value idx as a name if the index knows it. 1 if written. */
static int enc_name(enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    lua_pushvalue(L, idx);
    if (lua_rawget(L, e->index) != LUA_TTABLE) { lua_pop(L, 1); return 0; }
    /* The ext and the array inside it are two levels, as the decoder counts. */
    if (depth + 1 >= CP_CODEC_MAX_DEPTH)
        return enc_fail(e, depth, "value nested deeper than %d levels", CP_CODEC_MAX_DEPTH);
    size_t pos;
    if (enc_ext_begin(e, EXT_NAME, &pos) || msgpack_pack_array(&e->pk, 2)) return enc_oom(e);
    for (int i = 1; i <= 2; i++) {
        size_t n;
        lua_rawgeti(L, -1, i);
        const char *s = lua_tolstring(L, -1, &n);
        int rc = s ? (msgpack_pack_str(&e->pk, n) || msgpack_pack_str_body(&e->pk, s, n))
                   : msgpack_pack_nil(&e->pk);
        lua_pop(L, 1);
        if (rc) return enc_oom(e);
    }
    enc_ext_end(e, pos);
    lua_pop(L, 1);
    return 1;
}

/* Map with a one-byte header guessed now and widened at the end if needed,
 * so a table is walked once. */
static int enc_map(enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    size_t hpos = enc_pos(e);
    uint32_t cnt = 0;
    if (enc_raw(e, "\x80", 1)) return -1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int k = lua_gettop(L) - 1;
        e->path[depth + 1] = (pathc){PC_ASKEY, k, 0, NULL};
        if (enc_value(e, k, depth + 1)) return -1;
        e->path[depth + 1] = (pathc){PC_KEY, k, 0, NULL};
        if (enc_value(e, k + 1, depth + 1)) return -1;
        lua_pop(L, 1);
        cnt++;
    }
    if (cnt <= 15) {
        *enc_at(e, hpos) = (unsigned char)(0x80 | cnt);
        return 0;
    }
    size_t extra = cnt <= 0xffff ? 2 : 4;
    if (cp_buf_reserve(e->b, extra)) return enc_oom(e);
    unsigned char *h = enc_at(e, hpos);
    memmove(h + 1 + extra, h + 1, enc_pos(e) - hpos - 1);
    e->b->len += extra;
    if (extra == 2) { h[0] = 0xde; h[1] = (unsigned char)(cnt >> 8); h[2] = (unsigned char)cnt; }
    else { h[0] = 0xdf; cp_put_be32(h + 1, cnt); }
    return 0;
}

/* The contents of a table: array iff its keys are exactly 1..n (n >= 1),
 * unless core.array/core.map marked it. */
static int enc_body(enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (depth >= CP_CODEC_MAX_DEPTH)
        return enc_fail(e, depth, "value nested deeper than %d levels", CP_CODEC_MAX_DEPTH);
    if (!lua_checkstack(L, ENC_SLOTS)) return enc_fail(e, depth, "Lua stack overflow while encoding");
    int mark = -1;
    if (e->marks) {
        lua_pushvalue(L, idx);
        if (lua_rawget(L, e->marks) == LUA_TBOOLEAN) mark = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (mark == 0) return enc_map(e, idx, depth);
    lua_Unsigned n = lua_rawlen(L, idx);
    if (n == 0 && mark != 1) return enc_map(e, idx, depth);
    lua_Unsigned count = 0;
    int isarr = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        lua_Integer k;
        if (!lua_isinteger(L, -1) || (k = lua_tointeger(L, -1)) < 1 || (lua_Unsigned)k > n) {
            isarr = 0;
            lua_pop(L, 1);
            break;
        }
        count++;
    }
    if (!isarr || count != n) {
        if (mark == 1)
            return enc_fail(e, depth, "table marked as array has keys other than 1..%llu",
                            (unsigned long long)n);
        return enc_map(e, idx, depth);
    }
    if (msgpack_pack_array(&e->pk, (size_t)n)) return enc_oom(e);
    for (lua_Unsigned i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i);
        e->path[depth + 1] = (pathc){PC_INDEX, 0, (lua_Integer)i, NULL};
        if (enc_value(e, lua_gettop(L), depth + 1)) return -1;
        lua_pop(L, 1);
    }
    return 0;
}

static int enc_table(enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (!lua_checkstack(L, ENC_SLOTS)) return enc_fail(e, depth, "Lua stack overflow while encoding");
    int r = enc_seen(e, idx);
    if (r) return r < 0 ? -1 : 0;
    if (!e->rich) {
        if (lua_getmetatable(L, idx)) { e->restart = 1; return -1; }
        return enc_body(e, idx, depth);
    }
    if (lua_rawequal(L, idx, e->globals)) {
        unsigned char z = 0;
        return enc_fixext(e, EXT_GLOBALS, &z, 1);
    }
    if ((r = enc_name(e, idx, depth))) return r < 0 ? -1 : 0;
    if (!lua_getmetatable(L, idx)) return enc_body(e, idx, depth);
    /* An instance: [body, metatable] so the class comes along. */
    int mt = lua_gettop(L);
    size_t pos;
    if (depth + 1 >= CP_CODEC_MAX_DEPTH)
        return enc_fail(e, depth, "value nested deeper than %d levels", CP_CODEC_MAX_DEPTH);
    if (enc_ext_begin(e, EXT_META, &pos) || msgpack_pack_array(&e->pk, 2)) return enc_oom(e);
    e->path[depth + 1] = (pathc){PC_NONE, 0, 0, NULL};
    e->path[depth + 2] = (pathc){PC_NONE, 0, 0, NULL};
    if (enc_body(e, idx, depth + 2)) return -1;
    e->path[depth + 2] = (pathc){PC_META, 0, 0, NULL};
    if (enc_value(e, mt, depth + 2)) return -1;
    enc_ext_end(e, pos);
    lua_pop(L, 1);
    return 0;
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud)
{
    (void)L;
    return cp_buf_append((cp_buf *)ud, p, sz) ? 1 : 0;
}

/* A function by value holds one slot per level (the upvalue being encoded). */
static int enc_function(enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (!lua_checkstack(L, ENC_SLOTS)) return enc_fail(e, depth, "Lua stack overflow while encoding");
    int r = enc_seen(e, idx);
    if (r) return r < 0 ? -1 : 0;
    if (!e->rich) { e->restart = 1; return -1; }
    if ((r = enc_name(e, idx, depth))) return r < 0 ? -1 : 0;
    if (lua_iscfunction(L, idx))
        return enc_fail(e, depth, "cannot send a C function that is not reachable by name from package.loaded");
    if (depth + 1 >= CP_CODEC_MAX_DEPTH)
        return enc_fail(e, depth, "value nested deeper than %d levels", CP_CODEC_MAX_DEPTH);
    uint32_t self = e->lastobj;
    lua_Debug ar;
    lua_pushvalue(L, idx);
    lua_getinfo(L, ">u", &ar);
    size_t pos, bpos;
    if (enc_ext_begin(e, EXT_FUNC, &pos) || msgpack_pack_array(&e->pk, 1 + (size_t)ar.nups))
        return enc_oom(e);
    /* Bytecode as bin32, length patched after lua_dump; debug info kept so
     * tracebacks in the receiver show file and line. */
    bpos = enc_pos(e);
    if (enc_raw(e, "\xc6\0\0\0\0", 5)) return -1;
    lua_pushvalue(L, idx);
    int rc = lua_dump(L, dump_writer, e->b, 0);
    lua_pop(L, 1);
    if (rc) return enc_oom(e);
    cp_put_be32(enc_at(e, bpos) + 1, (uint32_t)(enc_pos(e) - bpos - 5));
    for (int i = 1; i <= ar.nups; i++) {
        const char *name = lua_getupvalue(L, idx, i);
        const void *id = lua_upvalueid(L, idx, i);
        pslot *s = pset_get(&e->ups, id);
        if (s) { /* the same variable as an upvalue of an earlier function */
            unsigned char pl[8];
            cp_put_be32(pl, (uint32_t)(s->v >> 32));
            cp_put_be32(pl + 4, (uint32_t)s->v);
            if (enc_fixext(e, EXT_UPREF, pl, 8)) return -1;
        } else {
            if (pset_add(&e->ups, id, (uint64_t)self << 32 | (uint32_t)i)) return enc_oom(e);
            /* _ENV is an upvalue like the others: the globals table goes
             * as GLOBALS (enc_table), any other environment by value. */
            e->path[depth + 1] = (pathc){PC_NONE, 0, 0, NULL};
            e->path[depth + 2] = (pathc){PC_UPVAL, 0, 0, name};
            if (enc_value(e, lua_gettop(L), depth + 2)) return -1;
        }
        lua_pop(L, 1);
    }
    enc_ext_end(e, pos);
    return 0;
}

static int enc_typed(enc *e, int idx, int depth, int type);

static int enc_value(enc *e, int idx, int depth)
{
    return enc_typed(e, idx, depth, lua_type(e->L, idx));
}

/* enc_value for a value whose type the caller knows already. */
static int enc_typed(enc *e, int idx, int depth, int type)
{
    lua_State *L = e->L;
    switch (type) {
    case LUA_TNIL:
        return msgpack_pack_nil(&e->pk) ? enc_oom(e) : 0;
    case LUA_TBOOLEAN:
        return (lua_toboolean(L, idx) ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk)) ? enc_oom(e) : 0;
    case LUA_TNUMBER: {
        /* Scalars are written in place: the packer's callback per piece
         * costs more than the bytes (this is the hot path of every send). */
        if (e->b->cap - e->b->len < 9 && cp_buf_reserve(e->b, 9)) return enc_oom(e);
        unsigned char *o = (unsigned char *)e->b->data + e->b->len;
        if (lua_isinteger(L, idx)) {
            lua_Integer v = lua_tointeger(L, idx);
            /* The smallest msgpack int form, as msgpack-c would choose. */
            size_t w;
            if (v >= 0) {
                uint64_t u = (uint64_t)v;
                if (u <= 0x7f) { o[0] = (unsigned char)u; w = 1; }
                else if (u <= 0xff) { o[0] = 0xcc; o[1] = (unsigned char)u; w = 2; }
                else if (u <= 0xffff) { o[0] = 0xcd; o[1] = (unsigned char)(u >> 8); o[2] = (unsigned char)u; w = 3; }
                else if (u <= 0xffffffffu) { o[0] = 0xce; cp_put_be32(o + 1, (uint32_t)u); w = 5; }
                else { o[0] = 0xcf; cp_put_be32(o + 1, (uint32_t)(u >> 32)); cp_put_be32(o + 5, (uint32_t)u); w = 9; }
            } else {
                if (v >= -32) { o[0] = (unsigned char)(int8_t)v; w = 1; }
                else if (v >= INT8_MIN) { o[0] = 0xd0; o[1] = (unsigned char)(int8_t)v; w = 2; }
                else if (v >= INT16_MIN) { uint16_t u = (uint16_t)(int16_t)v; o[0] = 0xd1; o[1] = (unsigned char)(u >> 8); o[2] = (unsigned char)u; w = 3; }
                else if (v >= INT32_MIN) { o[0] = 0xd2; cp_put_be32(o + 1, (uint32_t)(int32_t)v); w = 5; }
                else { uint64_t u = (uint64_t)v; o[0] = 0xd3; cp_put_be32(o + 1, (uint32_t)(u >> 32)); cp_put_be32(o + 5, (uint32_t)u); w = 9; }
            }
            e->b->len += w;
            return 0;
        }
        double d = (double)lua_tonumber(L, idx);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        o[0] = 0xcb;
        for (int i = 0; i < 8; i++) o[1 + i] = (unsigned char)(bits >> (56 - 8 * i));
        e->b->len += 9;
        return 0;
    }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (n > UINT32_MAX) return enc_fail(e, depth, "string too long (%zu bytes)", n);
        if (cp_buf_reserve(e->b, n + 5)) return enc_oom(e);
        unsigned char *o = (unsigned char *)e->b->data + e->b->len;
        size_t h;
        if (n < 32) { o[0] = (unsigned char)(0xa0 | n); h = 1; }
        else if (n <= 0xff) { o[0] = 0xd9; o[1] = (unsigned char)n; h = 2; }
        else if (n <= 0xffff) { o[0] = 0xda; o[1] = (unsigned char)(n >> 8); o[2] = (unsigned char)n; h = 3; }
        else { o[0] = 0xdb; cp_put_be32(o + 1, (uint32_t)n); h = 5; }
        memcpy(o + h, s, n);
        e->b->len += h + n;
        return 0;
    }
    case LUA_TTABLE:
        return enc_table(e, idx, depth);
    case LUA_TFUNCTION:
        return enc_function(e, idx, depth);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) /* coproc.null */
            return msgpack_pack_nil(&e->pk) ? enc_oom(e) : 0;
        return enc_fail(e, depth, "cannot send a light userdata");
    case LUA_TUSERDATA: {
        /* Naming its type pushes a string (may raise): leave that to the
         * protected rich pass. */
        if (!e->rich) { e->restart = 1; return -1; }
        enc_hold_gc(e);
        const char *tn = NULL;
        if (luaL_getmetafield(L, idx, "__name") != LUA_TNIL) {
            tn = lua_tostring(L, -1); /* stays valid: the metatable holds it */
            lua_pop(L, 1);
        }
        if (tn) return enc_fail(e, depth, "cannot send a userdata '%s'", tn);
        return enc_fail(e, depth, "cannot send a userdata");
    }
    case LUA_TTHREAD:
        return enc_fail(e, depth, "cannot send a thread (coroutine)");
    default:
        return enc_fail(e, depth, "cannot send a %s", luaL_typename(L, idx));
    }
}

/* ---------------------------------------------------------------------
 * Name index: value -> {module, key|nil}, for values reachable from
 * package.loaded. Built on first need, cached in the registry, rebuilt when
 * the set of modules changes (a module's fields changing later is not seen). */

static const char *const STDLIB[] = {
    "string", "table", "math", "io", "os", "coroutine", "utf8", "debug", "package", NULL
};

static void index_add(lua_State *L, int index, int val, const char *mod, int key)
{
    lua_pushvalue(L, val);
    if (lua_rawget(L, index) != LUA_TNIL) { lua_pop(L, 1); return; }
    lua_pop(L, 1);
    lua_pushvalue(L, val);
    lua_createtable(L, 2, 0);
    lua_pushstring(L, mod);
    lua_rawseti(L, -2, 1);
    if (key) {
        lua_pushvalue(L, key);
        lua_rawseti(L, -2, 2);
    }
    lua_rawset(L, index);
}

/* Add the string-keyed table/function fields of module table m. */
static void index_fields(lua_State *L, int index, int m, const char *mod, int cfunc_only)
{
    lua_pushnil(L);
    while (lua_next(L, m)) {
        int t = lua_type(L, -1);
        if (lua_type(L, -2) == LUA_TSTRING &&
            (cfunc_only ? lua_iscfunction(L, -1) : (t == LUA_TTABLE || t == LUA_TFUNCTION)))
            index_add(L, index, lua_gettop(L), mod, lua_gettop(L) - 1);
        lua_pop(L, 1);
    }
}

static int is_stdlib(const char *s)
{
    for (int i = 0; STDLIB[i]; i++)
        if (strcmp(s, STDLIB[i]) == 0) return 1;
    return 0;
}

/* [-0, +1, m] Push the name index. */
static void push_index(lua_State *L, enc *e)
{
    if (!lua_checkstack(L, 12)) { /* raising allocates the message */
        enc_hold_gc(e);
        luaL_checkstack(L, 12, "building the name index"); /* runs protected (rich_pass) */
    }
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    int loaded = lua_gettop(L);
    /* Signature of package.loaded: its size and a sum over (name, value)
     * addresses, so adding, removing or replacing a module is noticed. */
    uint64_t sig = 0;
    lua_pushnil(L);
    while (lua_next(L, loaded)) {
        uint64_t k = (uint64_t)(uintptr_t)lua_topointer(L, -2);
        uint64_t v = (uint64_t)(uintptr_t)lua_topointer(L, -1);
        sig += ((k * 0x9E3779B97F4A7C15ull) ^ v) * 0xC2B2AE3D27D4EB4Full + 1;
        lua_pop(L, 1);
    }
    lua_Integer nloaded = (lua_Integer)sig;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &INDEX_KEY) == LUA_TTABLE) {
        lua_rawgeti(L, -1, 2);
        lua_rawgeti(L, -2, 3);
        int fresh = lua_tointeger(L, -2) == nloaded && lua_rawequal(L, -1, loaded);
        lua_pop(L, 2);
        if (fresh) {
            lua_rawgeti(L, -1, 1);
            lua_replace(L, loaded);
            lua_settop(L, loaded);
            return;
        }
    }
    lua_pop(L, 1);
    enc_hold_gc(e);
    lua_newtable(L);
    int index = lua_gettop(L);
    /* Module values first, then fields of the standard library, then fields
     * of other modules, then _G's C functions (print, pairs, ...). Lua
     * functions that live only in _G are a script's own: sent by value. */
    lua_pushnil(L);
    while (lua_next(L, loaded)) {
        int t = lua_type(L, -1);
        if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "_G") != 0 &&
            (t == LUA_TTABLE || t == LUA_TFUNCTION))
            index_add(L, index, lua_gettop(L), lua_tostring(L, -2), 0);
        lua_pop(L, 1);
    }
    for (int i = 0; STDLIB[i]; i++) {
        if (lua_getfield(L, loaded, STDLIB[i]) == LUA_TTABLE)
            index_fields(L, index, lua_gettop(L), STDLIB[i], 0);
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    while (lua_next(L, loaded)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
            const char *mod = lua_tostring(L, -2);
            if (strcmp(mod, "_G") != 0 && !is_stdlib(mod))
                index_fields(L, index, lua_gettop(L), mod, 0);
        }
        lua_pop(L, 1);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    index_fields(L, index, lua_gettop(L), "_G", 1);
    lua_pop(L, 1);
    /* cache = {index, signature, loaded} */
    lua_createtable(L, 3, 0);
    lua_pushvalue(L, index);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, nloaded);
    lua_rawseti(L, -2, 2);
    lua_pushvalue(L, loaded);
    lua_rawseti(L, -2, 3);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &INDEX_KEY);
    lua_replace(L, loaded);
}

/* What one encoding writes: a value, or an array made of a head and a slice. */
typedef struct enc_what {
    int idx;                 /* the value, or the head table */
    int list;                /* 0 for a single value, else the list table */
    lua_Integer lo, hi;
} enc_what;

static int enc_top(enc *e, const enc_what *w)
{
    if (!w->list) return enc_value(e, w->idx, 0);
    lua_State *L = e->L;
    lua_Integer nh = (lua_Integer)lua_rawlen(L, w->idx);
    lua_Integer n = nh + (w->hi >= w->lo ? w->hi - w->lo + 1 : 0);
    if (n > UINT32_MAX) return enc_fail(e, 0, "too many items (%lld)", (long long)n);
    if (msgpack_pack_array(&e->pk, (size_t)n)) return enc_oom(e);
    /* The decoder numbers this array as object 0, as it would a table. */
    e->nobj++;
    int top = lua_gettop(L) + 1;
    for (lua_Integer i = 1; i <= n; i++) {
        int t = i <= nh ? lua_rawgeti(L, w->idx, i) : lua_rawgeti(L, w->list, w->lo + (i - nh) - 1);
        e->path[1] = (pathc){PC_INDEX, 0, i, NULL};
        if (enc_typed(e, top, 1, t)) return -1;
        lua_pop(L, 1);
    }
    return 0;
}

/* The rich pass, under lua_pcall: building the name index allocates Lua
 * objects (a memory error raises), and a raise must not skip the caller's
 * cleanup of its buffer. Stack: 1 the encoder, 2 the value or the head,
 * 3 the list. Returns enc_top's result as an integer. */
static int rich_pass(lua_State *L)
{
    enc *e = lua_touserdata(L, 1);
    enc_what w = *e->what;
    w.idx = 2;
    w.list = w.list ? 3 : 0;
    e->marks = 0;
    if (!g_marks_made) {}
    else if (lua_rawgetp(L, LUA_REGISTRYINDEX, &MARKS_KEY) == LUA_TTABLE) e->marks = lua_gettop(L);
    else lua_pop(L, 1);
    push_index(L, e);
    e->index = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    e->globals = lua_gettop(L);
    lua_pushinteger(L, enc_top(e, &w));
    return 1;
}

/* A lone scalar (the commonest small message): written without the
 * set-up a table needs (stack room, pointer sets, the marks table). */
static int encode_scalar(lua_State *L, int idx, int type, cp_buf *out, char *err, size_t errlen)
{
    size_t mark = cp_buf_size(out);
    enc e;
    e.L = L;
    e.b = out;
    e.rich = e.restart = e.failed = 0;
    e.err = err;
    e.errlen = errlen;
    if (errlen) err[0] = 0;
    e.path[0] = (pathc){PC_NONE, 0, 0, NULL};
    msgpack_packer_init(&e.pk, out, pk_write);
    if (enc_typed(&e, idx, 0, type) == 0) return 0;
    cp_buf_truncate(out, out->start + mark);
    if (!e.failed && errlen) snprintf(err, errlen, "cannot encode value");
    return -1;
}

static int encode_run(lua_State *L, const enc_what *w, cp_buf *out, char *err, size_t errlen)
{
    if (!w->list) {
        int t = lua_type(L, w->idx);
        if (t == LUA_TNUMBER || t == LUA_TSTRING || t == LUA_TBOOLEAN || t == LUA_TNIL)
            return encode_scalar(L, w->idx, t, out, err, errlen);
    }
    int top = lua_gettop(L);
    size_t mark = cp_buf_size(out);
    enc e;
    e.L = L;
    e.b = out;
    e.what = w;
    e.rich = e.restart = e.failed = 0;
    e.marks = e.index = e.globals = 0;
    e.nobj = e.lastobj = 0;
    e.err = err;
    e.errlen = errlen;
    if (errlen) err[0] = 0;
    if (!lua_checkstack(L, 16)) {
        if (errlen) snprintf(err, errlen, "Lua stack overflow while encoding");
        return -1;
    }
    pset_init(&e.seen);
    pset_init(&e.ups);
    e.path[0] = (pathc){PC_NONE, 0, 0, NULL};
    if (!g_marks_made) {}
    else if (lua_rawgetp(L, LUA_REGISTRYINDEX, &MARKS_KEY) == LUA_TTABLE) e.marks = top + 1;
    else lua_pop(L, 1);
    msgpack_packer_init(&e.pk, out, pk_write);

    /* The plain pass calls nothing that can raise: no Lua allocation, and
     * C memory for the pointer sets. */
    int rc = enc_top(&e, w);
    if (rc && e.restart) {
        cp_buf_truncate(out, out->start + mark);
        pset_free(&e.seen);
        e.nobj = 0;
        e.restart = 0;
        e.rich = 1;
        lua_settop(L, top);
        lua_pushcfunction(L, rich_pass);
        lua_pushlightuserdata(L, &e);
        lua_pushvalue(L, w->idx);
        if (w->list) lua_pushvalue(L, w->list);
        /* The pass stops the collector where it allocates (enc_hold_gc). */
        e.gc_held = 0;
        int st = lua_pcall(L, w->list ? 3 : 2, 1, 0);
        if (e.gc_held) lua_gc(L, LUA_GCRESTART);
        if (st == LUA_OK) rc = (int)lua_tointeger(L, -1);
        else {
            rc = -1;
            if (errlen) {
                const char *m = lua_tostring(L, -1);
                if (st == LUA_ERRMEM) snprintf(err, errlen, "out of memory while encoding");
                else snprintf(err, errlen, "cannot encode value: %s", m ? m : "error");
                e.failed = 1;
            }
        }
    }
    lua_settop(L, top);
    pset_free(&e.seen);
    pset_free(&e.ups);
    if (rc) {
        cp_buf_truncate(out, out->start + mark);
        if (!e.failed && errlen) snprintf(err, errlen, "cannot encode value");
        return -1;
    }
    return 0;
}

int cp_codec_encode(lua_State *L, int idx, cp_buf *out, char *err, size_t errlen)
{
    enc_what w = {lua_absindex(L, idx), 0, 0, 0};
    return encode_run(L, &w, out, err, errlen);
}

int cp_codec_encode_slice(lua_State *L, int head, int list, lua_Integer lo, lua_Integer hi,
                          cp_buf *out, char *err, size_t errlen)
{
    enc_what w = {lua_absindex(L, head), lua_absindex(L, list), lo, hi};
    return encode_run(L, &w, out, err, errlen);
}

/* ---------------------------------------------------------------------
 * Decoder */

enum { H_NIL, H_FALSE, H_TRUE, H_INT, H_UINT, H_FLOAT, H_STR, H_ARRAY, H_MAP, H_EXT };

typedef struct {
    int t;
    int ext;                   /* H_EXT: type */
    uint32_t n;                /* length (str, ext) or count (array, map) */
    int64_t i;
    uint64_t u;
    double f;
    const unsigned char *data; /* H_STR, H_EXT payload */
} hdr;

typedef struct {
    lua_State *L;
    const unsigned char *start;
    int refs;            /* stack index of the object table, 0 until a back-reference is met */
    lua_Integer nrefs;
    int restart;         /* met a back-reference without an object table: start over with one */
    int trust;           /* CP_TRUST_CODE or CP_TRUST_DATA */
    char *err;
    size_t errlen;
} dec;

static int dec_fail(dec *d, const unsigned char *at, const char *fmt, ...)
{
    if (!d->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(d->err, d->errlen, fmt, ap);
    va_end(ap);
    size_t w = r < 0 ? 0 : (size_t)r >= d->errlen ? d->errlen - 1 : (size_t)r;
    if (at) app(d->err, d->errlen, &w, " (at byte %zu)", (size_t)(at - d->start));
    return -1;
}

/* A value that trust mode "data" does not accept. */
static int dec_refuse(dec *d, const unsigned char *at, const char *what)
{
    return dec_fail(d, at, "%s from the peer is refused in trust mode 'data'", what);
}


/* Read one header (and skip the payload of str/bin/ext). Bounds checked. */
static int read_hdr(dec *d, const unsigned char **pp, const unsigned char *end, hdr *h)
{
    const unsigned char *p = *pp, *at = p;
    if (p >= end) return dec_fail(d, at, "truncated value");
    unsigned c = *p++;
    size_t avail = (size_t)(end - p);
    int lenbytes = 0; /* size of a following length/count field */
    h->data = NULL;
#define NEED(k) do { if (avail < (size_t)(k)) return dec_fail(d, at, "truncated value"); } while (0)
    if (c <= 0x7f) { h->t = H_INT; h->i = (int64_t)c; }
    else if (c >= 0xe0) { h->t = H_INT; h->i = (int64_t)(int8_t)c; }
    else if (c <= 0x8f) { h->t = H_MAP; h->n = c & 0x0f; }
    else if (c <= 0x9f) { h->t = H_ARRAY; h->n = c & 0x0f; }
    else if (c <= 0xbf) { h->t = H_STR; h->n = c & 0x1f; }
    else switch (c) {
    case 0xc0: h->t = H_NIL; break;
    case 0xc2: h->t = H_FALSE; break;
    case 0xc3: h->t = H_TRUE; break;
    case 0xc4: case 0xd9: h->t = H_STR; lenbytes = 1; break;
    case 0xc5: case 0xda: h->t = H_STR; lenbytes = 2; break;
    case 0xc6: case 0xdb: h->t = H_STR; lenbytes = 4; break;
    case 0xc7: case 0xc8: case 0xc9: {
        lenbytes = c == 0xc7 ? 1 : c == 0xc8 ? 2 : 4;
        NEED(lenbytes + 1);
        h->t = H_EXT;
        h->n = (uint32_t)cp_get_be(p, lenbytes);
        h->ext = (int)(int8_t)p[lenbytes];
        p += lenbytes + 1;
        avail -= (size_t)lenbytes + 1;
        lenbytes = -1; /* payload handled below */
        break;
    }
    case 0xca: {
        NEED(4);
        uint32_t u = (uint32_t)cp_get_be(p, 4);
        float f;
        memcpy(&f, &u, 4);
        h->t = H_FLOAT; h->f = f; p += 4;
        break;
    }
    case 0xcb: {
        NEED(8);
        uint64_t u = cp_get_be(p, 8);
        double f;
        memcpy(&f, &u, 8);
        h->t = H_FLOAT; h->f = f; p += 8;
        break;
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
        int k = 1 << (c - 0xcc);
        NEED(k);
        h->t = H_UINT; h->u = cp_get_be(p, k); p += k;
        break;
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int k = 1 << (c - 0xd0);
        NEED(k);
        uint64_t u = cp_get_be(p, k);
        if (k < 8 && (u >> (8 * k - 1))) u |= ~(uint64_t)0 << (8 * k); /* sign-extend */
        h->t = H_INT; h->i = (int64_t)u; p += k;
        break;
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        NEED(1);
        h->t = H_EXT;
        h->n = 1u << (c - 0xd4);
        h->ext = (int)(int8_t)*p++;
        avail--;
        lenbytes = -1;
        break;
    case 0xdc: h->t = H_ARRAY; lenbytes = 2; break;
    case 0xdd: h->t = H_ARRAY; lenbytes = 4; break;
    case 0xde: h->t = H_MAP; lenbytes = 2; break;
    case 0xdf: h->t = H_MAP; lenbytes = 4; break;
    default: return dec_fail(d, at, "invalid msgpack byte 0x%02x", c);
    }
    if (lenbytes > 0) {
        NEED(lenbytes);
        h->n = (uint32_t)cp_get_be(p, lenbytes);
        p += lenbytes;
        avail -= (size_t)lenbytes;
    }
    if (h->t == H_STR || h->t == H_EXT) {
        NEED(h->n);
        h->data = p;
        p += h->n;
    } else if (h->t == H_ARRAY) {
        NEED(h->n); /* every element takes at least one byte */
    } else if (h->t == H_MAP) {
        NEED((uint64_t)h->n * 2);
    }
#undef NEED
    *pp = p;
    return 0;
}

static void dec_register(dec *d, int idx)
{
    if (!d->refs) return;
    lua_pushvalue(d->L, idx);
    lua_rawseti(d->L, d->refs, ++d->nrefs);
}

static int dec_value(dec *d, const unsigned char **pp, const unsigned char *end, int depth);

/* Read the array header opening an ext payload; n = expected count or -1. */
static int dec_payload_array(dec *d, const unsigned char **pp, const unsigned char *end, long n, uint32_t *count)
{
    const unsigned char *at = *pp;
    hdr h;
    if (read_hdr(d, pp, end, &h)) return -1;
    if (h.t != H_ARRAY || (n >= 0 && h.n != (uint32_t)n)) return dec_fail(d, at, "malformed ext payload");
    *count = h.n;
    return 0;
}

/* The error of a NAME whose require failed. require's own "not found"
 * (its first line; the rest lists every path tried) says the module is not
 * there; anything else is the module's load error, kept whole: a syntax
 * error is on the line after "error loading module ...". */
static void name_load_error(dec *d, const char *msg, const char *mod, size_t modlen, const char *dot,
                            const char *ks, int klen)
{
    char why[200];
    size_t w = 0;
    int mlen = modlen > 200 ? 200 : (int)modlen;
    if (!msg) msg = "require failed (a non-string error)";
    size_t len = strlen(msg);
    int missing = len >= 19 + modlen && memcmp(msg, "module '", 8) == 0 && memcmp(msg + 8, mod, modlen) == 0
        && memcmp(msg + 8 + modlen, "' not found", 11) == 0;
    for (const char *c = msg; *c && w < sizeof why - 1; c++) {
        if (*c == '\n') {
            if (missing) break;
            why[w++] = ' ';     /* "\n\t" between the lines reads as one space */
            while (c[1] == '\t') c++;
        } else {
            why[w++] = *c;
        }
    }
    if (missing && w > 0 && why[w - 1] == ':') w--;
    why[w] = 0;
    if (missing)
        dec_fail(d, NULL, "cannot resolve '%.*s%s%.*s': %s", mlen, mod, dot, klen, ks, why);
    else
        dec_fail(d, NULL, "cannot load module '%.*s' for '%.*s%s%.*s': %s", mlen, mod, mlen, mod, dot, klen,
                 ks, why);
}

/* NAME: [module, key|nil] -> require(module)[key] */
static int dec_name(dec *d, const hdr *x, int depth)
{
    lua_State *L = d->L;
    const unsigned char *p = x->data, *end = x->data + x->n;
    uint32_t cnt = 0;
    hdr m, k;
    if (dec_payload_array(d, &p, end, 2, &cnt)) return -1;
    if (read_hdr(d, &p, end, &m) || m.t != H_STR) return dec_fail(d, x->data, "malformed name");
    if (read_hdr(d, &p, end, &k) || (k.t != H_STR && k.t != H_NIL) || p != end)
        return dec_fail(d, x->data, "malformed name");
    int mlen = m.n > 200 ? 200 : (int)m.n, klen = k.t == H_STR ? (k.n > 200 ? 200 : (int)k.n) : 0;
    const char *dot = k.t == H_STR ? "." : "";
    const char *ks = k.t == H_STR ? (const char *)k.data : "";
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushlstring(L, (const char *)m.data, m.n);
    if (lua_rawget(L, -2) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_getglobal(L, "require");
        lua_pushlstring(L, (const char *)m.data, m.n);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            name_load_error(d, lua_tostring(L, -1), (const char *)m.data, m.n, dot, ks, klen);
            lua_pop(L, 2);
            return -1;
        }
    }
    lua_remove(L, -2);
    if (k.t == H_STR) {
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_pushlstring(L, ks, k.n);
            lua_rawget(L, -2);
            lua_remove(L, -2);
        } else {
            lua_pop(L, 1);
            lua_pushnil(L);
        }
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return dec_fail(d, NULL, "cannot resolve '%.*s%s%.*s'", mlen, (const char *)m.data, dot, klen, ks);
    }
    (void)depth;
    dec_register(d, lua_gettop(L));
    return 0;
}

/* FUNC: [bytecode, upvalue...] */
static int dec_func(dec *d, const hdr *x, int depth)
{
    lua_State *L = d->L;
    const unsigned char *p = x->data, *end = x->data + x->n;
    uint32_t cnt = 0;
    hdr bc;
    if (dec_payload_array(d, &p, end, -1, &cnt)) return -1;
    if (cnt < 1 || read_hdr(d, &p, end, &bc) || bc.t != H_STR)
        return dec_fail(d, x->data, "malformed function");
    /* The chunk's structure is checked before lua_load, which would trust
     * it; its code is trusted as much as the peer (trust mode "code"). */
    char why[CP_CODEC_ERRLEN];
    if (cp_bytecode_load(L, (const char *)bc.data, bc.n, "=(coproc)", why, sizeof why))
        return dec_fail(d, x->data, "cannot load function: %s", why);
    int f = lua_gettop(L);
    dec_register(d, f);
    lua_Debug ar;
    lua_pushvalue(L, f);
    lua_getinfo(L, ">u", &ar);
    if ((uint32_t)ar.nups != cnt - 1)
        return dec_fail(d, x->data, "function has %d upvalues, payload %u", ar.nups, cnt - 1);
    for (int i = 1; i <= ar.nups; i++) {
        const unsigned char *q = p;
        hdr u;
        if (read_hdr(d, &q, end, &u)) return -1;
        if (u.t == H_EXT && u.ext == EXT_UPREF) {
            if (u.n != 8) return dec_fail(d, p, "malformed upvalue reference");
            if (!d->refs) { d->restart = 1; return -1; }
            uint32_t k = cp_get_be32(u.data), n = cp_get_be32(u.data + 4);
            if ((lua_Integer)k >= d->nrefs) return dec_fail(d, p, "bad upvalue reference");
            lua_rawgeti(L, d->refs, (lua_Integer)k + 1);
            if (!lua_isfunction(L, -1) || lua_iscfunction(L, -1) || n < 1 ||
                lua_getupvalue(L, -1, (int)n) == NULL) {
                lua_pop(L, 1);
                return dec_fail(d, p, "bad upvalue reference");
            }
            lua_pop(L, 1);
            lua_upvaluejoin(L, f, i, -1, (int)n);
            lua_pop(L, 1);
            p = q;
        } else {
            if (dec_value(d, &p, end, depth + 2)) return -1;
            lua_setupvalue(L, f, i);
        }
    }
    if (p != end) return dec_fail(d, p, "trailing bytes in function");
    return 0;
}

/* META: [body, metatable] */
static int dec_meta(dec *d, const hdr *x, int depth)
{
    lua_State *L = d->L;
    const unsigned char *p = x->data, *end = x->data + x->n, *q;
    uint32_t cnt = 0;
    hdr b;
    if (dec_payload_array(d, &p, end, 2, &cnt)) return -1;
    q = p;
    if (read_hdr(d, &q, end, &b)) return -1;
    if (b.t != H_MAP && b.t != H_ARRAY) return dec_fail(d, p, "malformed instance");
    if (dec_value(d, &p, end, depth + 2)) return -1;
    q = p;
    if (dec_value(d, &p, end, depth + 2)) return -1;
    if (!lua_istable(L, -1)) return dec_fail(d, q, "metatable is not a table");
    lua_setmetatable(L, -2);
    if (p != end) return dec_fail(d, p, "trailing bytes in instance");
    return 0;
}

static int dec_value(dec *d, const unsigned char **pp, const unsigned char *end, int depth)
{
    lua_State *L = d->L;
    const unsigned char *at = *pp;
    /* The scalars most messages are made of, without the general header
     * reader (a pool reply is thousands of them). */
    if (at < end) {
        unsigned c = *at;
        size_t left = (size_t)(end - at);
        if (c <= 0x7f) { lua_pushinteger(L, (lua_Integer)c); *pp = at + 1; return 0; }
        if (c >= 0xe0) { lua_pushinteger(L, (lua_Integer)(int8_t)c); *pp = at + 1; return 0; }
        if (c >= 0xa0 && c <= 0xbf && left > (c & 0x1f)) { /* fixstr: most table keys */
            lua_pushlstring(L, (const char *)at + 1, c & 0x1f);
            *pp = at + 1 + (c & 0x1f);
            return 0;
        }
        switch (c) {
        case 0xc0: lua_pushnil(L); *pp = at + 1; return 0;
        case 0xc2: lua_pushboolean(L, 0); *pp = at + 1; return 0;
        case 0xc3: lua_pushboolean(L, 1); *pp = at + 1; return 0;
        case 0xcc: if (left >= 2) { lua_pushinteger(L, at[1]); *pp = at + 2; return 0; } break;
        case 0xcd: if (left >= 3) { lua_pushinteger(L, (lua_Integer)cp_get_be(at + 1, 2)); *pp = at + 3; return 0; } break;
        case 0xce: if (left >= 5) { lua_pushinteger(L, (lua_Integer)cp_get_be32(at + 1)); *pp = at + 5; return 0; } break;
        case 0xd0: if (left >= 2) { lua_pushinteger(L, (int8_t)at[1]); *pp = at + 2; return 0; } break;
        case 0xd1: if (left >= 3) { lua_pushinteger(L, (int16_t)cp_get_be(at + 1, 2)); *pp = at + 3; return 0; } break;
        case 0xd2: if (left >= 5) { lua_pushinteger(L, (int32_t)cp_get_be32(at + 1)); *pp = at + 5; return 0; } break;
        case 0xcb:
            if (left >= 9) {
                uint64_t u = cp_get_be(at + 1, 8);
                double f;
                memcpy(&f, &u, 8);
                lua_pushnumber(L, (lua_Number)f);
                *pp = at + 9;
                return 0;
            }
            break;
        default: break;
        }
    }
    hdr h;
    if (read_hdr(d, pp, end, &h)) return -1;
    switch (h.t) {
    case H_NIL: lua_pushnil(L); return 0;
    case H_FALSE: lua_pushboolean(L, 0); return 0;
    case H_TRUE: lua_pushboolean(L, 1); return 0;
    case H_INT: lua_pushinteger(L, (lua_Integer)h.i); return 0;
    case H_UINT:
        if (h.u <= (uint64_t)INT64_MAX) lua_pushinteger(L, (lua_Integer)h.u);
        else lua_pushnumber(L, (lua_Number)h.u); /* beyond Lua integers */
        return 0;
    case H_FLOAT: lua_pushnumber(L, (lua_Number)h.f); return 0;
    case H_STR: lua_pushlstring(L, (const char *)h.data, h.n); return 0;
    case H_ARRAY: {
        if (depth >= CP_CODEC_MAX_DEPTH || !lua_checkstack(L, 8))
            return dec_fail(d, at, "value nested deeper than %d levels", CP_CODEC_MAX_DEPTH);
        lua_createtable(L, (int)(h.n > INT32_MAX ? INT32_MAX : h.n), 0);
        int t = lua_gettop(L);
        dec_register(d, t);
        for (uint32_t i = 0; i < h.n; i++) {
            if (dec_value(d, pp, end, depth + 1)) return -1;
            lua_rawseti(L, t, (lua_Integer)i + 1);
        }
        if (h.n == 0) { /* keep "empty array" for a re-encode */
            push_marks(L);
            lua_pushvalue(L, t);
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
            lua_pop(L, 1);
        }
        return 0;
    }
    case H_MAP: {
        if (depth >= CP_CODEC_MAX_DEPTH || !lua_checkstack(L, 8))
            return dec_fail(d, at, "value nested deeper than %d levels", CP_CODEC_MAX_DEPTH);
        lua_createtable(L, 0, (int)(h.n > INT32_MAX ? INT32_MAX : h.n));
        int t = lua_gettop(L);
        dec_register(d, t);
        for (uint32_t i = 0; i < h.n; i++) {
            const unsigned char *kat = *pp;
            if (kat < end && *kat == 0xc0) return dec_fail(d, kat, "table key is nil");
            if (dec_value(d, pp, end, depth + 1)) return -1;
            if (kat < end && (*kat == 0xca || *kat == 0xcb) && isnan(lua_tonumber(L, -1)))
                return dec_fail(d, kat, "table key is NaN");
            if (dec_value(d, pp, end, depth + 1)) return -1;
            lua_rawset(L, t);
        }
        return 0;
    }
    case H_EXT:
        switch (h.ext) {
        case EXT_REF: {
            if (h.n != 4) return dec_fail(d, at, "malformed back-reference");
            if (!d->refs) { d->restart = 1; return -1; }
            uint32_t k = cp_get_be32(h.data);
            if ((lua_Integer)k >= d->nrefs) return dec_fail(d, at, "bad back-reference %u", k);
            lua_rawgeti(L, d->refs, (lua_Integer)k + 1);
            return 0;
        }
        case EXT_GLOBALS:
            if (d->trust == CP_TRUST_DATA) return dec_refuse(d, at, "the globals table (GLOBALS)");
            lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
            dec_register(d, lua_gettop(L));
            return 0;
        case EXT_NAME: case EXT_FUNC: case EXT_META:
            /* Refused before anything is looked up, required or loaded. */
            if (d->trust == CP_TRUST_DATA)
                return dec_refuse(d, at, h.ext == EXT_NAME ? "a named value (NAME)"
                                       : h.ext == EXT_FUNC ? "a function (FUNC)"
                                       : "a table with a metatable (META)");
            /* The ext and the array inside it are two levels, as when encoding. */
            if (depth + 1 >= CP_CODEC_MAX_DEPTH || !lua_checkstack(L, 8))
                return dec_fail(d, at, "value nested deeper than %d levels", CP_CODEC_MAX_DEPTH);
            return h.ext == EXT_NAME ? dec_name(d, &h, depth)
                 : h.ext == EXT_FUNC ? dec_func(d, &h, depth) : dec_meta(d, &h, depth);
        case EXT_UPREF: return dec_fail(d, at, "upvalue reference outside a function");
        default: return dec_fail(d, at, "unknown msgpack ext type %d", h.ext);
        }
    }
    return dec_fail(d, at, "malformed value");
}

/* One pass over the input. With bad set and a top-level array, the elements
 * are decoded one by one into a table (see cp_codec_decode_prefix): on a
 * failure *bad is the index of the element that failed and the table holds
 * those before it. */
static int dec_pass(dec *d, const unsigned char *data, size_t len, lua_Integer *bad)
{
    const unsigned char *p = data, *end = data + len;
    lua_State *L = d->L;
    hdr h;
    if (!bad) {
        int rc = dec_value(d, &p, end, 0);
        if (rc == 0 && p != end)
            rc = dec_fail(d, p, "%zu trailing bytes after the value", (size_t)(end - p));
        return rc;
    }
    /* The array header alone: a count past the bytes left is found at the
     * element that is missing. */
    unsigned c = *p++;
    int lb = c == 0xdc ? 2 : c == 0xdd ? 4 : 0;
    if ((size_t)(end - p) < (size_t)lb) return dec_fail(d, data, "truncated value");
    h.n = lb ? (uint32_t)cp_get_be(p, lb) : c & 0x0f;
    p += lb;
    size_t room = (size_t)(end - p);
    lua_createtable(L, (int)(h.n < room ? h.n : room > INT32_MAX ? INT32_MAX : room), 1);
    int t = lua_gettop(L);
    dec_register(d, t);
    lua_Integer i, n = (lua_Integer)h.n;
    int rc = 0;
    for (i = 1; i <= n; i++) {
        if ((rc = dec_value(d, &p, end, 1)) != 0) break;
        lua_rawseti(L, t, i);
    }
    if (rc == 0 && p != end)
        rc = dec_fail(d, p, "%zu trailing bytes after the value", (size_t)(end - p));
    lua_settop(L, t);
    lua_pushinteger(L, i - 1);
    lua_setfield(L, t, "n");
    *bad = rc ? i : 0;
    return rc;
}

static int decode_run(lua_State *L, const char *data, size_t len, cp_trust trust,
                      lua_Integer *bad, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    dec d = {L, (const unsigned char *)data, 0, 0, 0, (int)trust, err, errlen};
    if (errlen) err[0] = 0;
    if (bad) *bad = 0;
    if (len == 0) return dec_fail(&d, NULL, "empty input");
    if (!lua_checkstack(L, 16)) return dec_fail(&d, NULL, "Lua stack overflow while decoding");
    int rc = dec_pass(&d, d.start, len, bad);
    if (rc && d.restart) {
        /* Shared objects: decode again, numbering every object this time. */
        lua_settop(L, top);
        lua_newtable(L);
        d.refs = lua_gettop(L);
        d.restart = 0;
        rc = dec_pass(&d, d.start, len, bad);
    }
    if (rc && !(bad && *bad)) {
        lua_settop(L, top);
        return -1;
    }
    if (d.refs) lua_remove(L, d.refs);
    return rc;
}

/* A message that is one scalar filling exactly len bytes (an integer, a
 * float, nil, a boolean, a short string): pushed at once, without the
 * decoder's set-up, which costs more than the value. 1 if pushed, else 0
 * (anything else, or malformed: the full decoder then says what). Like any
 * push, it needs one free stack slot, which callers have. */
static int decode_scalar(lua_State *L, const unsigned char *p, size_t len)
{
    unsigned c = p[0];
    if (len == 1) {
        if (c <= 0x7f) lua_pushinteger(L, (lua_Integer)c);
        else if (c >= 0xe0) lua_pushinteger(L, (lua_Integer)(int8_t)c);
        else if (c == 0xc0) lua_pushnil(L);
        else if (c == 0xc2 || c == 0xc3) lua_pushboolean(L, c == 0xc3);
        else if (c == 0xa0) lua_pushliteral(L, "");
        else return 0;
        return 1;
    }
    if (c >= 0xa0 && c <= 0xbf) {
        if (len != 1 + (c & 0x1f)) return 0;
        lua_pushlstring(L, (const char *)p + 1, len - 1);
        return 1;
    }
    switch (c) {
    case 0xcc: if (len != 2) return 0; lua_pushinteger(L, p[1]); return 1;
    case 0xcd: if (len != 3) return 0; lua_pushinteger(L, (lua_Integer)cp_get_be(p + 1, 2)); return 1;
    case 0xce: if (len != 5) return 0; lua_pushinteger(L, (lua_Integer)cp_get_be32(p + 1)); return 1;
    case 0xd0: if (len != 2) return 0; lua_pushinteger(L, (int8_t)p[1]); return 1;
    case 0xd1: if (len != 3) return 0; lua_pushinteger(L, (int16_t)cp_get_be(p + 1, 2)); return 1;
    case 0xd2: if (len != 5) return 0; lua_pushinteger(L, (int32_t)cp_get_be32(p + 1)); return 1;
    case 0xd3: if (len != 9) return 0; lua_pushinteger(L, (lua_Integer)(int64_t)cp_get_be(p + 1, 8)); return 1;
    case 0xcb: {
        if (len != 9) return 0;
        uint64_t u = cp_get_be(p + 1, 8);
        double f;
        memcpy(&f, &u, 8);
        lua_pushnumber(L, (lua_Number)f);
        return 1;
    }
    default: return 0;
    }
}

int cp_codec_decode_trust(lua_State *L, const char *data, size_t len, cp_trust trust,
                          char *err, size_t errlen)
{
    if (len && len <= 32 && decode_scalar(L, (const unsigned char *)data, len)) return 0;
    return decode_run(L, data, len, trust, NULL, err, errlen);
}

int cp_codec_decode(lua_State *L, const char *data, size_t len, char *err, size_t errlen)
{
    return cp_codec_decode_trust(L, data, len, CP_TRUST_CODE, err, errlen);
}

int cp_codec_decode_prefix(lua_State *L, const char *data, size_t len, cp_trust trust,
                           lua_Integer *bad, char *err, size_t errlen)
{
    unsigned c = len ? (unsigned char)data[0] : 0;
    int array = (c >= 0x90 && c <= 0x9f) || c == 0xdc || c == 0xdd;
    *bad = 0;
    if (array && decode_run(L, data, len, trust, bad, err, errlen) == 0) return 0;
    if (array && *bad) return -1;
    /* Not an array, or its header is broken: decode as a whole. */
    if (!array && decode_run(L, data, len, trust, NULL, err, errlen) == 0) return 0;
    *bad = 1;
    lua_pushnil(L);
    return -1;
}

/* ---------------------------------------------------------------------
 * Decoding an array's tail straight into a table (cp_codec_decode_into) */

static int into_pass(dec *d, const unsigned char *data, size_t len, cp_codec_into *in)
{
    const unsigned char *p = data, *end = data + len;
    lua_State *L = d->L;
    hdr h;
    in->bad = 0;
    in->count = in->stored = 0;
    /* The array header alone (as dec_pass): a count past the bytes left is
     * found at the element that is missing. */
    unsigned c = *p;
    if (!((c >= 0x90 && c <= 0x9f) || c == 0xdc || c == 0xdd)) return dec_fail(d, data, "not an array");
    p++;
    int lb = c == 0xdc ? 2 : c == 0xdd ? 4 : 0;
    if ((size_t)(end - p) < (size_t)lb) return dec_fail(d, data, "truncated value");
    h.n = lb ? (uint32_t)cp_get_be(p, lb) : c & 0x0f;
    p += lb;
    in->count = (lua_Integer)h.n;
    if (d->refs) { /* the array itself is object 0: nothing can refer to it here */
        lua_newtable(L);
        dec_register(d, lua_gettop(L));
        lua_pop(L, 1);
    }
    lua_Integer n = (lua_Integer)h.n, i;
    for (i = 1; i <= n; i++) {
        if (i >= in->first && (!in->t || i - in->first >= in->limit)) break;
        if (dec_value(d, &p, end, 1)) {
            in->bad = i;
            return -1;
        }
        if (i >= in->first) {
            lua_rawseti(L, in->t, in->base + i);
            in->stored++;
        }
    }
    if (i > n && p != end) {
        in->bad = n + 1;
        return dec_fail(d, p, "%zu trailing bytes after the value", (size_t)(end - p));
    }
    for (; i < in->first; i++) lua_pushnil(L); /* a short array: the head is padded */
    return 0;
}

int cp_codec_decode_into(lua_State *L, const char *data, size_t len, cp_trust trust, cp_codec_into *in,
                         char *err, size_t errlen)
{
    int top = lua_gettop(L);
    dec d = {L, (const unsigned char *)data, 0, 0, 0, (int)trust, err, errlen};
    if (errlen) err[0] = 0;
    in->bad = 0;
    if (in->first < 1 || in->first > 250) return dec_fail(&d, NULL, "bad head size %d", in->first);
    if (len == 0) return dec_fail(&d, NULL, "empty input");
    if (!lua_checkstack(L, in->first + 16)) return dec_fail(&d, NULL, "Lua stack overflow while decoding");
    int rc = into_pass(&d, d.start, len, in);
    if (rc && d.restart) {
        /* Shared objects: decode again, numbering every object this time
         * (the elements stored so far are stored again). */
        lua_settop(L, top);
        lua_newtable(L);
        d.refs = lua_gettop(L);
        d.restart = 0;
        rc = into_pass(&d, d.start, len, in);
        if (rc == 0) lua_remove(L, d.refs);
    }
    if (rc) lua_settop(L, top);
    return rc;
}

/* ---------------------------------------------------------------------
 * Lua helpers: null, array, map */

static int l_mark(lua_State *L, int kind)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    push_marks(L);
    lua_pushvalue(L, 1);
    lua_pushboolean(L, kind);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return 1;
}

int cp_codec_mark(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (!lua_checkstack(L, 2)) return -1;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &MARKS_KEY) != LUA_TTABLE) { /* nothing marked yet */
        lua_pop(L, 1);
        return -1;
    }
    lua_pushvalue(L, idx);
    int mark = lua_rawget(L, -2) == LUA_TBOOLEAN ? lua_toboolean(L, -1) : -1;
    lua_pop(L, 2);
    return mark;
}

static int l_array(lua_State *L) { return l_mark(L, 1); }
static int l_map(lua_State *L) { return l_mark(L, 0); }

void cp_codec_open(lua_State *L, int t)
{
    t = lua_absindex(L, t);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, t, "null");
    lua_pushcfunction(L, l_array);
    lua_setfield(L, t, "array");
    lua_pushcfunction(L, l_map);
    lua_setfield(L, t, "map");
}

int cp_codec_str_head(cp_buf *out, size_t n)
{
    if (n > UINT32_MAX || cp_buf_reserve(out, 5)) return -1;
    unsigned char *o = (unsigned char *)out->data + out->len;
    size_t h;
    if (n < 32) { o[0] = (unsigned char)(0xa0 | n); h = 1; }
    else if (n <= 0xff) { o[0] = 0xd9; o[1] = (unsigned char)n; h = 2; }
    else if (n <= 0xffff) { o[0] = 0xda; o[1] = (unsigned char)(n >> 8); o[2] = (unsigned char)n; h = 3; }
    else { o[0] = 0xdb; cp_put_be32(o + 1, (uint32_t)n); h = 5; }
    out->len += h;
    return 0;
}
