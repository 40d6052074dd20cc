/* bytecode.c: see bytecode.h. The walk follows the layout lua_dump writes
 * in Lua 5.4 (ldump.c): a header, the number of upvalues of the main
 * function, then the main function; each function is
 *
 *   source (string), linedefined, lastlinedefined (ints), numparams,
 *   is_vararg, maxstacksize (bytes), code (int n, n instructions),
 *   constants (int n, n tagged values), upvalues (int n, n * 3 bytes),
 *   protos (int n, n functions), lineinfo (int n, n bytes),
 *   abslineinfo (int n, n * 2 ints), locvars (int n, n * (string, 2 ints)),
 *   upvalue names (int n, n strings)
 *
 * ints and sizes are written 7 bits a byte, most significant group first,
 * the last byte with bit 7 set; a string is size+1 then its bytes (0 for no
 * string). Counts are checked here the way the loader reads them, so the
 * loader never allocates for bytes that are not there. */
#include "bytecode.h"

#include <lauxlib.h>

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if LUA_VERSION_NUM != 504
#error "bytecode.c walks the Lua 5.4 binary chunk format"
#endif

#define HDR_LEN 31 /* signature 4, version, format, LUAC_DATA 6, 3 sizes, LUAC_INT, LUAC_NUM */

/* Constant tags as lua_dump writes them (lobject.h variants). */
enum { K_NIL = 0, K_FALSE = 1, K_TRUE = 17, K_INT = 3, K_FLT = 19, K_SHRSTR = 4, K_LNGSTR = 20 };

static unsigned char ref_hdr[HDR_LEN];
static int ref_ready;

static int hdr_writer(lua_State *L, const void *p, size_t sz, void *ud)
{
    (void)L;
    size_t *have = ud;
    size_t take = sz < HDR_LEN - *have ? sz : HDR_LEN - *have;
    memcpy(ref_hdr + *have, p, take);
    *have += take;
    return 0;
}

/* [-0, +0, -] The header this Lua build writes, taken from a dump of an empty
 * chunk once per process (every state of one liblua writes the same). */
static int reference_header(lua_State *L)
{
    if (ref_ready) return 0;
    if (!lua_checkstack(L, 1)) return -1;
    if (luaL_loadbuffer(L, "", 0, "=") != LUA_OK) { /* pushed a message instead */
        lua_pop(L, 1);
        return -1;
    }
    size_t have = 0;
    lua_dump(L, hdr_writer, &have, 1);
    lua_pop(L, 1);
    if (have != HDR_LEN || memcmp(ref_hdr, LUA_SIGNATURE, 4) != 0 || ref_hdr[4] != 0x54) return -1;
    ref_ready = 1;
    return 0;
}

typedef struct {
    const unsigned char *p, *end, *start;
    size_t isz, nsz, insz; /* sizeof lua_Integer, lua_Number, Instruction */
    char *err;
    size_t errlen;
} walk;

static int bad(walk *w, const char *fmt, ...)
{
    if (!w->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(w->err, w->errlen, fmt, ap);
    va_end(ap);
    size_t n = r < 0 ? 0 : (size_t)r >= w->errlen ? w->errlen - 1 : (size_t)r;
    snprintf(w->err + n, w->errlen - n, " (at bytecode byte %zu)", (size_t)(w->p - w->start));
    return -1;
}

static size_t left(const walk *w) { return (size_t)(w->end - w->p); }

static int byte(walk *w, unsigned *b)
{
    if (w->p >= w->end) return bad(w, "truncated bytecode");
    *b = *w->p++;
    return 0;
}

/* As the loader's loadUnsigned: refuse before a shift could overflow limit. */
static int unsig(walk *w, size_t limit, size_t *out)
{
    size_t x = 0;
    unsigned b = 0;
    limit >>= 7;
    do {
        if (byte(w, &b)) return -1;
        if (x >= limit) return bad(w, "integer overflow in bytecode");
        x = (x << 7) | (b & 0x7f);
    } while ((b & 0x80) == 0);
    *out = x;
    return 0;
}

static int integer(walk *w, size_t *out) { return unsig(w, INT_MAX, out); }

static int skip(walk *w, size_t n, const char *what)
{
    if (n > left(w)) return bad(w, "%s of %zu bytes but %zu bytes are left", what, n, left(w));
    w->p += n;
    return 0;
}

/* A count of items taking at least min bytes each. */
static int count(walk *w, size_t min, const char *what, size_t *n)
{
    if (integer(w, n)) return -1;
    if (*n > left(w) / min) return bad(w, "declared %zu %s but %zu bytes are left", *n, what, left(w));
    return 0;
}

/* A string; *present is 0 for "no string". */
static int string(walk *w, int *present)
{
    size_t size;
    if (unsig(w, SIZE_MAX, &size)) return -1;
    if (present) *present = size != 0;
    return size ? skip(w, size - 1, "string") : 0;
}

static int function(walk *w, int nest, size_t *nups)
{
    size_t n, i, v;
    unsigned b = 0;
    if (nest > CP_BYTECODE_MAX_NEST) return bad(w, "functions nested deeper than %d", CP_BYTECODE_MAX_NEST);
    if (string(w, NULL) || integer(w, &v) || integer(w, &v)) return -1;
    if (byte(w, &b) || byte(w, &b) || byte(w, &b)) return -1; /* numparams, is_vararg, maxstacksize */
    if (count(w, w->insz, "instructions", &n) || skip(w, n * w->insz, "code")) return -1;
    if (count(w, 1, "constants", &n)) return -1;
    for (i = 0; i < n; i++) {
        int present;
        if (byte(w, &b)) return -1;
        switch (b) {
        case K_NIL: case K_FALSE: case K_TRUE: break;
        case K_INT: if (skip(w, w->isz, "integer constant")) return -1; break;
        case K_FLT: if (skip(w, w->nsz, "float constant")) return -1; break;
        case K_SHRSTR: case K_LNGSTR:
            if (string(w, &present)) return -1;
            if (!present) return bad(w, "string constant without a string");
            break;
        default: return bad(w, "unknown constant type %u", b);
        }
    }
    if (count(w, 3, "upvalues", nups) || skip(w, *nups * 3, "upvalues")) return -1;
    if (count(w, 1, "functions", &n)) return -1;
    for (i = 0; i < n; i++) {
        size_t sub;
        if (function(w, nest + 1, &sub)) return -1;
    }
    /* Debug information. */
    if (count(w, 1, "line entries", &n) || skip(w, n, "line information")) return -1;
    if (count(w, 2, "absolute line entries", &n)) return -1;
    for (i = 0; i < n; i++)
        if (integer(w, &v) || integer(w, &v)) return -1;
    if (count(w, 3, "local variables", &n)) return -1;
    for (i = 0; i < n; i++)
        if (string(w, NULL) || integer(w, &v) || integer(w, &v)) return -1;
    if (count(w, 1, "upvalue names", &n)) return -1;
    if (n != 0 && n != *nups) /* the 5.4.4 loader writes names past the upvalues */
        return bad(w, "%zu upvalue names for %zu upvalues", n, *nups);
    for (i = 0; i < n; i++)
        if (string(w, NULL)) return -1;
    return 0;
}

int cp_bytecode_check(lua_State *L, const char *b, size_t n, char *err, size_t errlen)
{
    walk w = {(const unsigned char *)b, (const unsigned char *)b + n, (const unsigned char *)b, 0, 0, 0, err, errlen};
    if (errlen) err[0] = 0;
    if (reference_header(L)) return bad(&w, "cannot read this Lua's bytecode header");
    if (n < HDR_LEN + 1 || memcmp(b, ref_hdr, HDR_LEN) != 0)
        return bad(&w, "not bytecode of this Lua version and build");
    w.insz = ref_hdr[12];
    w.isz = ref_hdr[13];
    w.nsz = ref_hdr[14];
    w.p += HDR_LEN;
    unsigned nclosure = 0;
    size_t nups;
    if (byte(&w, &nclosure) || function(&w, 1, &nups)) return -1;
    if (nclosure != nups) /* the closure would be smaller than its prototype says */
        return bad(&w, "main function has %u upvalues, its prototype %zu", nclosure, nups);
    if (w.p != w.end) return bad(&w, "%zu trailing bytes after the bytecode", left(&w));
    return 0;
}

/* ---- loading under a budget ---- */

typedef struct {
    lua_Alloc f;
    void *ud;
    size_t left;
} budget;

static void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    budget *bd = ud;
    size_t old = ptr ? osize : 0; /* with ptr NULL, osize is a type tag */
    if (nsize > old) {
        if (nsize - old > bd->left) return NULL; /* lua_load fails with a memory error */
        void *r = bd->f(bd->ud, ptr, osize, nsize);
        if (r) bd->left -= nsize - old;
        return r;
    }
    return bd->f(bd->ud, ptr, osize, nsize); /* frees and shrinks are not counted back */
}

typedef struct { const char *p; size_t n; } src;

static const char *reader(lua_State *L, void *ud, size_t *size)
{
    (void)L;
    src *s = ud;
    *size = s->n;
    s->n = 0;
    return s->p;
}

int cp_bytecode_load(lua_State *L, const char *b, size_t n, const char *chunkname,
                     char *err, size_t errlen)
{
    if (cp_bytecode_check(L, b, n, err, errlen)) return -1;
    if (!lua_checkstack(L, 2)) {
        if (errlen) snprintf(err, errlen, "Lua stack overflow");
        return -1;
    }
    budget bd;
    bd.f = lua_getallocf(L, &bd.ud);
    bd.left = CP_BYTECODE_BUDGET(n);
    src s = {b, n};
    /* lua_load runs protected (it returns, never raises), and the parser of
     * binary chunks runs no garbage collection step, so no finalizer runs
     * under the budget and the allocator is put back on every path. */
    lua_setallocf(L, budget_alloc, &bd);
    int rc = lua_load(L, reader, &s, chunkname, "b");
    lua_setallocf(L, bd.f, bd.ud);
    if (rc != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        if (errlen) snprintf(err, errlen, "%s", rc == LUA_ERRMEM ? "bytecode needs more memory than its size allows"
                                                          : m ? m : "bad bytecode");
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}
