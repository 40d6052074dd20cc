/* codec.h: Lua values <-> msgpack bytes (the payload of a frame).
 *
 * The only place that knows how a Lua value looks on the wire. Encoding
 * appends to a cp_buf and either succeeds completely or leaves the buffer
 * exactly as it was (so "nothing is written" on EncodeError). Decoding pushes
 * exactly one value or nothing.
 *
 * Supported: nil, booleans, integers and floats (subtype kept), strings
 * (binary safe), tables (1..n sequence -> array, else map, nesting, shared
 * references and cycles kept), Lua functions by value (bytecode + upvalues,
 * shared upvalues stay shared, _ENV rebinds to the receiver's globals), and
 * values reachable by name (standard library, package.loaded modules and
 * their fields) sent as a name and looked up on the other side.
 * Wire details are in docs/protocol.md. */
#ifndef CP_CODEC_H
#define CP_CODEC_H

#include <lua.h>
#include "buf.h"

#define CP_CODEC_MAX_DEPTH 200
#define CP_CODEC_ERRLEN 256

/* What a decoder accepts from the peer. "code" (the default): functions
 * (bytecode is loaded, never run by the decoder), tables with metatables,
 * values named by module (a module not loaded yet is required) and the
 * receiver's globals table. "data": none of those; such a value fails the
 * decode before anything is loaded or required ("a function (FUNC) from the
 * peer is refused in trust mode 'data'"). */
typedef enum cp_trust { CP_TRUST_CODE = 0, CP_TRUST_DATA = 1 } cp_trust;

/* [-0, +0, -] Encode the value at index idx and append it to out.
 * Returns 0 on success. On failure returns -1, out is unchanged, the stack
 * is as it was, and err holds a readable reason ("cannot send a userdata
 * (at key 'x')"). Never raises: a memory error is reported the same way. */
int cp_codec_encode(lua_State *L, int idx, cp_buf *out, char *err, size_t errlen);

/* [-0, +0, -] Encode the array head[1..#head], list[lo..hi] (nils in the
 * slice kept as nil), as one value: what a batch of work items needs without
 * copying them into a new table first. Same failure rules as above. */
int cp_codec_encode_slice(lua_State *L, int head, int list, lua_Integer lo, lua_Integer hi,
                          cp_buf *out, char *err, size_t errlen);

/* Append the header of a string of n bytes, whose bytes the caller sends
 * after it (a large string written from where it is). 0, or -1 when too
 * long or out of memory. */
int cp_codec_str_head(cp_buf *out, size_t n);

/* [-0, +(0|1), m] Decode one msgpack value from data[0..len) and push it.
 * Returns 0 on success (one value pushed, all len bytes used). On failure
 * returns -1, pushes nothing, leaves the stack as it was, and err holds the
 * reason. Never reads past len. Only a memory error raises. */
int cp_codec_decode_trust(lua_State *L, const char *data, size_t len, cp_trust trust,
                          char *err, size_t errlen);
/* The same in trust mode "code". */
int cp_codec_decode(lua_State *L, const char *data, size_t len, char *err, size_t errlen);

/* [-0, +1, m] Decode as much as possible of a top-level array, element by
 * element: pushes a table of the elements decoded, with field n. Returns 0
 * when everything decoded (*bad = 0); else -1 with *bad the 1-based index of
 * the element that failed (n = *bad - 1; n + 1 also when bytes trail the
 * array) and err the reason. References between elements work as in a whole
 * decode. A top-level value that is not an array (or whose array header is
 * broken) is decoded as a whole: pushes the value and returns 0, or pushes
 * nil and returns -1 with *bad = 1. */
int cp_codec_decode_prefix(lua_State *L, const char *data, size_t len, cp_trust trust,
                           lua_Integer *bad, char *err, size_t errlen);

/* [-0, +0, -] How core.array/core.map (or a decoded empty array) marked the
 * table at idx: 1 array, 0 map, -1 not marked. */
int cp_codec_mark(lua_State *L, int idx);

/* Decoding a msgpack array whose tail goes into an existing table (the
 * pool's replies into a job's results, without a table per reply). */
typedef struct cp_codec_into {
    int first;           /* elements 1..first-1 are pushed (1..250) */
    int t;               /* stack index of the table for the rest; 0: the head only */
    lua_Integer base;    /* element i (>= first) becomes t[base + i] ... */
    lua_Integer limit;   /* ... for at most limit elements */
    lua_Integer count;   /* out: the array's element count */
    lua_Integer stored;  /* out: the elements stored into t */
    lua_Integer bad;     /* out: the element that failed (0: the array itself) */
} cp_codec_into;

/* [-0, +(first-1), m] Decode the array in data: push its elements 1..first-1
 * (nil where the array is shorter), then store elements first..first+limit-1
 * into in->t (the rest is not decoded). Returns 0; -1 on a failure, with
 * nothing pushed, in->bad and err set, and the elements before in->bad
 * stored (those of the head are not). */
int cp_codec_decode_into(lua_State *L, const char *data, size_t len, cp_trust trust, cp_codec_into *in,
                         char *err, size_t errlen);

/* [-0, +0, v] The trust mode named by the value at i ("code", "data"; nil
 * is "code"); raises "unknown trust mode 'x' (expected 'code' or 'data')".
 * (l_codec.c, for every binding that takes a trust option.) */
cp_trust cp_l_checktrust(lua_State *L, int i);
const char *cp_l_trustname(cp_trust t);

/* [-0, +0, -] Register codec helpers (coproc.null sentinel etc.) in the
 * module table at index t. */
void cp_codec_open(lua_State *L, int t);

#endif
