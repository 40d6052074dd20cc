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
#include "../src/buf.h"

#define CP_CODEC_MAX_DEPTH 200
#define CP_CODEC_ERRLEN 256

/* [-0, +0, m] Encode the value at index idx and append it to out.
 * Returns 0 on success. On failure returns -1, out is unchanged, and err
 * holds a readable reason ("cannot send a userdata (at key 'x')"). */
int cp_codec_encode(lua_State *L, int idx, cp_buf *out, char *err, size_t errlen);

/* [-0, +0, m] Encode the array head[1..#head], list[lo..hi] (nils in the
 * slice kept as nil), as one value: what a batch of work items needs without
 * copying them into a new table first. Same failure rules as above. */
int cp_codec_encode_slice(lua_State *L, int head, int list, lua_Integer lo, lua_Integer hi,
                          cp_buf *out, char *err, size_t errlen);

/* [-0, +(0|1), m] Decode one msgpack value from data[0..len) and push it.
 * Returns 0 on success (one value pushed, all len bytes used). On failure
 * returns -1, pushes nothing, and err holds the reason. Never reads past len. */
int cp_codec_decode(lua_State *L, const char *data, size_t len, char *err, size_t errlen);

/* [-0, +0, -] Register codec helpers (coproc.null sentinel etc.) in the
 * module table at index t. */
void cp_codec_open(lua_State *L, int t);

#endif
