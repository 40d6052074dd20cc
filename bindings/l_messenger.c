/* l_messenger.c: coproc.Messenger, one end of a worker connection.
 *
 * Misuse (bad argument types) raises Lua argument errors; runtime failures
 * raise coproc error objects (Timeout, WorkerDied, WorkerError, EncodeError,
 * ProtocolError, ResourceRequestedClose, QueueFull). */
#include "lcore.h"
#include "lmessenger.h"
#include "codec.h"
#include "loop.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- userdata life cycle ---- */

l_messenger *cp_l_messenger_push(lua_State *L)
{
    l_messenger *lm = lua_newuserdatauv(L, sizeof *lm, 1);
    cp_messenger_init(&lm->m);
    lm->trust = CP_TRUST_CODE;
    luaL_setmetatable(L, CP_MESSENGER_MT);
    return lm;
}

/* Any messenger, closed or not (close, is_closed, __tostring, __gc). */
static l_messenger *check(lua_State *L, int i)
{
    return luaL_checkudata(L, i, CP_MESSENGER_MT);
}

/* The messenger a method is called on, not closed (a dead peer's queued
 * messages stay readable). Methods have the metatable as upvalue 1
 * (cp_l_newclass), so the common case is one pointer comparison. */
static cp_messenger *self_open(lua_State *L)
{
    l_messenger *lm = cp_l_isclass(L, 1) ? lua_touserdata(L, 1) : check(L, 1);
    if (lm->m.state == CP_M_CLOSED) cp_l_closed(L, CP_MESSENGER_MT);
    return &lm->m;
}

/* The same for a messenger at any index (iterators hold theirs as an upvalue). */
static cp_messenger *open_at(lua_State *L, int i)
{
    l_messenger *lm = check(L, i);
    if (lm->m.state == CP_M_CLOSED) cp_l_closed(L, CP_MESSENGER_MT);
    return &lm->m;
}

void cp_l_messenger_drain(l_messenger *lm, double timeout)
{
    if (lm->m.state == CP_M_OPEN) cp_messenger_drain(&lm->m, timeout);
}

static int l_close(lua_State *L)
{
    l_messenger *lm = check(L, 1);
    cp_messenger_close(&lm->m);
    return 0;
}

static int l_gc(lua_State *L)
{
    l_messenger *lm = check(L, 1);
    /* A finaliser in a forked child must not act on the parent's loop. */
    if (lm->m.owner == 0 || lm->m.owner == getpid()) cp_messenger_close(&lm->m);
    return 0;
}

static int l_tostring(lua_State *L)
{
    l_messenger *lm = check(L, 1);
    static const char *names[] = {"closed", "open", "peer gone", "broken"};
    if (lm->m.peer)
        lua_pushfstring(L, "coproc.Messenger(%s, worker %d, %p)", names[lm->m.state], (int)lm->m.peer->pid, (void *)lm);
    else
        lua_pushfstring(L, "coproc.Messenger(%s, %p)", names[lm->m.state], (void *)lm);
    return 1;
}

/* ---- arguments ---- */

typedef struct chankey { char b[CP_CHANNEL_MAX + 16]; size_t n; } chankey;

static void check_channel(lua_State *L, int i, chankey *k)
{
    switch (lua_type(L, i)) {
    case LUA_TNONE: case LUA_TNIL: k->n = cp_channel_nil(k->b); return;
    case LUA_TBOOLEAN: k->n = cp_channel_bool(k->b, lua_toboolean(L, i)); return;
    case LUA_TNUMBER: {
        int isint;
        lua_Integer v = lua_tointegerx(L, i, &isint);
        if (isint) { k->n = cp_channel_int(k->b, v); return; }
        break;
    }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, i, &n);
        if (n > CP_CHANNEL_MAX) luaL_argerror(L, i, "channel name longer than 255 bytes");
        k->n = cp_channel_str(k->b, s, n);
        return;
    }
    }
    luaL_argerror(L, i, "channel must be nil, a boolean, an integer or a string");
}

static cp_chan *get_chan(lua_State *L, cp_messenger *m, int i, int create)
{
    chankey k;
    check_channel(L, i, &k);
    cp_chan *c = cp_messenger_chan(m, k.b, k.n, create);
    if (!c && create) luaL_error(L, "out of memory");
    return c;
}

/* Explicit priority, else data.priority for a table payload, else +inf.
 * A raw get: sending runs none of the value's metamethods (a "strict"
 * class whose __index raises can be sent; a proxy's __index is not asked). */
static double get_priority(lua_State *L, int data, int i)
{
    double p = INFINITY;
    if (!lua_isnoneornil(L, i)) p = luaL_checknumber(L, i);
    else if (lua_type(L, data) == LUA_TTABLE) {
        lua_pushvalue(L, lua_upvalueindex(2)); /* "priority", interned once */
        lua_rawget(L, data);
        if (lua_type(L, -1) == LUA_TNUMBER) p = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    if (isnan(p)) luaL_argerror(L, i, "priority is NaN");
    return p;
}

static double opt_timeout(lua_State *L, int i)
{
    if (lua_isnoneornil(L, i)) return -1;
    double t = luaL_checknumber(L, i);
    if (isnan(t) || t < 0) luaL_argerror(L, i, "timeout must be a non-negative number or nil");
    return t;
}

/* ---- errors ---- */

static int sum_remaining(const cp_messenger *m)
{
    uint64_t n = cp_messenger_remaining(m);
    return (int)(n > INT_MAX ? INT_MAX : n);
}

/* Raise the error that says why nothing more will come. */
static int raise_down(lua_State *L, cp_messenger *m)
{
    if (m->state == CP_M_BROKEN) {
        cp_l_pusherror(L, "ProtocolError", "connection dropped after a bad frame: %s", m->error);
        return cp_l_raise(L);
    }
    if (m->state == CP_M_CLOSED) return luaL_error(L, "attempt to use a closed messenger");
    if (!m->peer) {
        /* Worker side: the host is gone or closed its end; end quietly. */
        cp_l_pusherror(L, "ResourceRequestedClose", "the host closed the connection");
        return cp_l_raise(L);
    }
    cp_proc *p = m->peer;
    int exited = cp_messenger_peer_exited(m);
    int code = cp_proc_exitcode(p);
    int unanswered = sum_remaining(m);
    if (!exited)
        cp_l_pusherror(L, "WorkerDied", "worker %d closed its connection (still running; %d request(s) unanswered)", (int)p->pid, unanswered);
    else if (code < 0)
        cp_l_pusherror(L, "WorkerDied", "worker %d was killed by signal %d (%d request(s) unanswered)", (int)p->pid, -code, unanswered);
    else
        cp_l_pusherror(L, "WorkerDied", "worker %d exited with status %d (%d request(s) unanswered)", (int)p->pid, code, unanswered);
    lua_pushinteger(L, p->pid);
    lua_setfield(L, -2, "pid");
    if (exited && code >= 0) { lua_pushinteger(L, code); lua_setfield(L, -2, "exitcode"); }
    if (exited && code < 0) { lua_pushinteger(L, -code); lua_setfield(L, -2, "signal"); }
    lua_pushinteger(L, unanswered);
    lua_setfield(L, -2, "unanswered");
    return cp_l_raise(L);
}

/* [-0, +2, m] Push the value of a channel from its key bytes (nil, a
 * boolean, an integer in any msgpack int form, or a str; see frame.c), then
 * how messages name it: "channel 'log'", "channel 7", "the default channel". */
static void push_channel(lua_State *L, const char *key, size_t len)
{
    const unsigned char *k = (const unsigned char *)key;
    unsigned c = len ? k[0] : 0xc0;
    if (c == 0xc0) { lua_pushnil(L); lua_pushliteral(L, "the default channel"); return; }
    if (c == 0xc2 || c == 0xc3) lua_pushboolean(L, c == 0xc3);
    else if (c <= 0x7f) lua_pushinteger(L, c);
    else if (c >= 0xe0) lua_pushinteger(L, (int8_t)c);
    else if ((c >= 0xa0 && c <= 0xbf) || c == 0xd9) {
        size_t skip = c == 0xd9 ? 2 : 1;
        lua_pushlstring(L, key + skip, len > skip ? len - skip : 0);
        lua_pushfstring(L, "channel '%s'", lua_tostring(L, -1));
        return;
    } else {
        /* uint8..64 (cc..cf), int8..64 (d0..d3): big-endian after the tag */
        uint64_t u = 0;
        for (size_t i = 1; i < len; i++) u = u << 8 | k[i];
        int nbytes = (int)len - 1;
        lua_Integer v = (lua_Integer)u;
        if (c >= 0xd0 && nbytes < 8 && nbytes > 0 && (u >> (8 * nbytes - 1)) & 1)
            v = (lua_Integer)(u | ~(uint64_t)0 << (8 * nbytes)); /* sign-extend */
        lua_pushinteger(L, v);
    }
    lua_pushfstring(L, "channel %s", luaL_tolstring(L, -1, NULL));
    lua_remove(L, -2); /* the tolstring copy */
}

static void format_mib(char *out, size_t n, size_t bytes)
{
    if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) snprintf(out, n, "%zu MiB", bytes >> 20);
    else if (bytes >= (1u << 20)) snprintf(out, n, "%.1f MiB", (double)bytes / (1u << 20));
    else snprintf(out, n, "%zu bytes", bytes);
}

/* Raise QueueFull: reading is held back because the queues are over their
 * bound, and what the caller waits for (a message of channel want, or with
 * want NULL the peer reading what we sent: doing says which) cannot come
 * until queued messages are read. Fields: channel, messages, bytes, limit. */
static int raise_held(lua_State *L, cp_messenger *m, const cp_chan *want, const char *doing)
{
    luaL_checkstack(L, 10, NULL);
    const cp_chan *c = cp_messenger_fullest(m);
    size_t bytes = c ? c->bytes : m->queued_bytes;
    lua_Integer count = (lua_Integer)(c ? c->q.n : cp_messenger_queued(m));
    char held[32], limit[32];
    format_mib(held, sizeof held, bytes);
    format_mib(limit, sizeof limit, m->max_queued);
    if (c) push_channel(L, c->key, c->keylen);
    else { lua_pushnil(L); lua_pushliteral(L, "the queues"); }
    int name = lua_gettop(L);
    if (want) {
        push_channel(L, want->key, want->keylen);
        lua_pushfstring(L, "cannot receive on %s", lua_tostring(L, -1));
    } else {
        lua_pushfstring(L, "cannot %s while the peer is not reading", doing);
    }
    cp_l_pusherror(L, "QueueFull",
        "%s: %s holds %I unread messages (%s), over the messenger's limit of %s: "
        "read it or raise the limit with set_max_queued",
        lua_tostring(L, -1), lua_tostring(L, name), count, held, limit);
    lua_pushvalue(L, name - 1);
    lua_setfield(L, -2, "channel");
    lua_pushinteger(L, count);
    lua_setfield(L, -2, "messages");
    lua_pushinteger(L, (lua_Integer)bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, (lua_Integer)m->max_queued);
    lua_setfield(L, -2, "limit");
    return cp_l_raise(L);
}

/* trust: the mode of the binding holding m (its first member). */
static cp_trust trust_of(const cp_messenger *m)
{
    return (cp_trust)((const l_messenger *)(const void *)m)->trust;
}

/* Raise for a CLOSE or ERROR message (consumes it). */
static int raise_special(lua_State *L, cp_messenger *m, cp_msg *msg)
{
    int kind = msg->kind;
    char err[CP_CODEC_ERRLEN];
    int ok = cp_codec_decode_trust(L, msg->data, msg->len, trust_of(m), err, sizeof err) == 0;
    cp_msg_free(msg);
    if (kind == CP_KIND_CLOSE) {
        if (ok) lua_pop(L, 1);
        cp_l_pusherror(L, "ResourceRequestedClose", "the other side requested close");
        return cp_l_raise(L);
    }
    const char *text = "(undecodable error)";
    int info = lua_gettop(L);
    if (ok && lua_type(L, -1) == LUA_TTABLE) {
        lua_getfield(L, info, "message");
        if (lua_isstring(L, -1)) text = lua_tostring(L, -1);
    } else if (ok && lua_isstring(L, -1)) {
        text = lua_tostring(L, -1);
    }
    if (m->peer) cp_l_pusherror(L, "WorkerError", "worker %d: %s", (int)m->peer->pid, text);
    else cp_l_pusherror(L, "WorkerError", "host: %s", text);
    int e = lua_gettop(L);
    lua_pushstring(L, text);
    lua_setfield(L, e, "remote_message");
    if (m->peer) { lua_pushinteger(L, m->peer->pid); lua_setfield(L, e, "pid"); }
    if (ok && lua_type(L, info) == LUA_TTABLE) {
        lua_getfield(L, info, "traceback");
        lua_setfield(L, e, "traceback");
        lua_getfield(L, info, "class");
        lua_setfield(L, e, "remote_class");
    }
    return cp_l_raise(L);
}

/* Push the payload of msg (consumes it), decoded in trust mode trust. */
static void push_payload(lua_State *L, cp_msg *msg, cp_trust trust)
{
    char err[CP_CODEC_ERRLEN];
    int rc = cp_codec_decode_trust(L, msg->data, msg->len, trust, err, sizeof err);
    cp_msg_free(msg);
    if (rc) cp_l_error(L, "ProtocolError", "cannot decode a message: %s", err);
}

/* One message from channel c if there is one now: pushes it and returns 1;
 * raises for specials; returns 0 when the queue is empty. */
static int try_receive(lua_State *L, cp_messenger *m, cp_chan *c)
{
    cp_msg *msg = cp_messenger_pop_special(m);
    if (msg) return raise_special(L, m, msg);
    msg = cp_messenger_pop(m, c);
    if (!msg) return 0;
    push_payload(L, msg, trust_of(m));
    return 1;
}

/* Like try_receive, but pushes the payload's msgpack bytes undecoded. */
static int try_receive_raw(lua_State *L, cp_messenger *m, cp_chan *c)
{
    cp_msg *msg = cp_messenger_pop_special(m);
    if (msg) return raise_special(L, m, msg);
    msg = cp_messenger_pop(m, c);
    if (!msg) return 0;
    lua_pushlstring(L, msg->data, msg->len);
    cp_msg_free(msg);
    return 1;
}

static void raise_wait(lua_State *L, int rc)
{
    if (rc == -1) cp_l_error(L, "Interrupted", "interrupted!");
}

/* Nothing for channel c is queued and reading is held back: waiting could
 * only end if we read past the bound. */
static void check_held(lua_State *L, cp_messenger *m, const cp_chan *c)
{
    if (cp_messenger_held(m) && !cp_messenger_has(m, c)) raise_held(L, m, c, NULL);
}

/* ---- sending ---- */

/* The cork policy (messenger.h) leaves a burst's tail pending until the
 * next coproc call; a sender that goes on computing gets it written by a
 * one-shot count hook. A hook the program set itself (a debugger, a
 * profiler) is never replaced. */
static void flush_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    cp_messenger_flush_all();
}

static void arm_flush_hook(lua_State *L, cp_messenger *m)
{
    if (!cp_messenger_corked(m)) return;
    if (lua_gethook(L) == NULL) lua_sethook(L, flush_hook, LUA_MASKCOUNT, CP_FLUSH_HOOK_COUNT);
}

/* A slice to send as one array: head[1..#head], list[lo..hi]. */
typedef struct slice { int list; lua_Integer lo, hi; } slice;

/* Before a frame is appended: wait for room (at most the send timeout), so
 * that a send that fails has queued nothing. */
static void need_room(lua_State *L, cp_messenger *m)
{
    if (cp_messenger_unsent(m) <= CP_HIGH_WATER) return; /* the common case, inline */
    int rc = cp_messenger_room(m, m->send_timeout);
    if (rc == 1) return;
    if (rc == CP_WAIT_DOWN) raise_down(L, m);
    if (rc == CP_WAIT_HELD) raise_held(L, m, NULL, "send");
    raise_wait(L, rc);
    char t[32];
    snprintf(t, sizeof t, "%g", m->send_timeout);
    lua_Integer unsent = (lua_Integer)cp_messenger_unsent(m);
    cp_l_pusherror(L, "Timeout", "send timed out after %s s: %I bytes still unsent, the peer is not reading", t, unsent);
    lua_pushinteger(L, unsent);
    lua_setfield(L, -2, "unsent");
    lua_pushnumber(L, m->send_timeout);
    lua_setfield(L, -2, "timeout");
    cp_l_raise(L);
}

/* wait_room: 0 for CLOSE and ERROR frames, which are small and must never
 * block (terminate, __close and __gc send them). */
static void send_frame(lua_State *L, cp_messenger *m, int kind, int data, const slice *sl,
                       cp_chan *c, const chankey *k, double prio, unsigned flags, int wait_room)
{
    if (m->state != CP_M_OPEN) raise_down(L, m);
    if (wait_room) need_room(L, m);
    size_t mark;
    cp_buf *out = cp_messenger_begin(m, kind, k->b, k->n, prio, flags, &mark);
    if (!out) luaL_error(L, "out of memory");
    char err[CP_CODEC_ERRLEN];
    int rc = sl ? cp_codec_encode_slice(L, data, sl->list, sl->lo, sl->hi, out, err, sizeof err)
                : cp_codec_encode(L, data, out, err, sizeof err);
    if (rc) {
        cp_messenger_abort(m, mark);
        cp_l_error(L, "EncodeError", "cannot send: %s", err);
    }
    size_t size = out->len - mark;
    if (cp_messenger_commit(m, mark))
        cp_l_error(L, "EncodeError", "cannot send: message of %d bytes exceeds the maximum frame size of %d bytes",
                   (int)(size > INT_MAX ? INT_MAX : size), (int)(m->max_frame > INT_MAX ? INT_MAX : m->max_frame));
    if (cp_messenger_sent(m, c, flags)) raise_down(L, m);
    arm_flush_hook(L, m);
}

static void send_one(lua_State *L, cp_messenger *m, int kind, int data, cp_chan *c,
                     const chankey *k, double prio, unsigned flags)
{
    send_frame(L, m, kind, data, NULL, c, k, prio, flags, kind == CP_KIND_DATA);
}

static int send_with(lua_State *L, unsigned flags)
{
    cp_messenger *m = self_open(L);
    chankey k;
    check_channel(L, 3, &k);
    double prio = get_priority(L, 2, 4);
    cp_chan *c = cp_messenger_chan(m, k.b, k.n, 1);
    if (!c) return luaL_error(L, "out of memory");
    send_one(L, m, CP_KIND_DATA, 2, c, &k, prio, flags);
    return 0;
}

static int l_send_request(lua_State *L) { return send_with(L, CP_FLAG_REQUEST); }
static int l_send_reply(lua_State *L) { return send_with(L, CP_FLAG_REPLY); }
static int l_send_norequest(lua_State *L) { return send_with(L, 0); }

static int l_send_request_multiple(lua_State *L)
{
    cp_messenger *m = self_open(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 4); /* items are pushed above the arguments */
    chankey k;
    check_channel(L, 3, &k);
    cp_chan *c = cp_messenger_chan(m, k.b, k.n, 1);
    if (!c) return luaL_error(L, "out of memory");
    lua_Integer n = luaL_len(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        int data = lua_gettop(L);
        double prio = get_priority(L, data, 4);
        send_one(L, m, CP_KIND_DATA, data, c, &k, prio, CP_FLAG_REQUEST);
        lua_settop(L, data - 1);
    }
    return 0;
}

/* send_request_slice(head, list, lo, hi, channel, priority): one request
 * whose data is the array head[1..#head], list[lo..hi], encoded straight from
 * the two tables (a pool batch without building a table per batch; nil
 * elements of the slice stay in place). send_reply_slice: the same as a
 * reply (a pool worker's results, with no walk to tell an array). */
static int slice_with(lua_State *L, unsigned flags)
{
    cp_messenger *m = self_open(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    slice sl = {3, luaL_checkinteger(L, 4), luaL_checkinteger(L, 5)};
    luaL_argcheck(L, sl.lo >= 1, 4, "slice must start at 1 or later");
    chankey k;
    check_channel(L, 6, &k);
    double prio = lua_isnoneornil(L, 7) ? INFINITY : luaL_checknumber(L, 7);
    if (isnan(prio)) luaL_argerror(L, 7, "priority is NaN");
    cp_chan *c = cp_messenger_chan(m, k.b, k.n, 1);
    if (!c) return luaL_error(L, "out of memory");
    send_frame(L, m, CP_KIND_DATA, 2, &sl, c, &k, prio, flags, 1);
    return 0;
}

static int l_send_request_slice(lua_State *L) { return slice_with(L, CP_FLAG_REQUEST); }
static int l_send_reply_slice(lua_State *L) { return slice_with(L, CP_FLAG_REPLY); }

static int l_send_close_request(lua_State *L)
{
    cp_messenger *m = self_open(L);
    chankey k;
    k.n = cp_channel_nil(k.b);
    lua_pushnil(L);
    send_one(L, m, CP_KIND_CLOSE, lua_gettop(L), NULL, &k, 0, 0);
    cp_messenger_flush_nb(m);
    return 0;
}

static int l_send_error(lua_State *L)
{
    cp_messenger *m = self_open(L);
    /* Normalise to {message, traceback, class}. */
    lua_settop(L, 2);
    lua_createtable(L, 0, 3);
    int t = 3;
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_getfield(L, 2, "traceback");
        lua_setfield(L, t, "traceback");
        lua_getfield(L, 2, "class");
        if (lua_type(L, -1) == LUA_TTABLE) { lua_getfield(L, -1, "name"); lua_remove(L, -2); }
        if (!lua_isstring(L, -1)) { lua_pop(L, 1); lua_pushnil(L); }
        lua_setfield(L, t, "class");
        lua_getfield(L, 2, "message");
        if (lua_isstring(L, -1)) { lua_setfield(L, t, "message"); goto send; }
        lua_pop(L, 1);
    }
    luaL_tolstring(L, 2, NULL);
    lua_setfield(L, t, "message");
send:;
    chankey k;
    k.n = cp_channel_nil(k.b);
    send_one(L, m, CP_KIND_ERROR, t, NULL, &k, 0, 0);
    cp_messenger_flush_nb(m);
    return 0;
}

/* ---- receiving ---- */

static int l_receive_blocking(lua_State *L)
{
    cp_messenger *m = self_open(L);
    cp_chan *c = get_chan(L, m, 2, 1);
    double timeout = opt_timeout(L, 3);
    for (;;) {
        if (try_receive(L, m, c)) return 1;
        if (cp_messenger_exhausted(m, c)) return raise_down(L, m);
        check_held(L, m, c);
        int rc = cp_messenger_wait(m, c, 0, timeout);
        if (rc == 0) {
            if (try_receive(L, m, c)) return 1;
            return cp_l_error(L, "Timeout", "no message within %f seconds", timeout);
        }
        raise_wait(L, rc);
    }
}

/* receive_raw(channel, timeout): receive_blocking without the decode: the
 * payload as a string of msgpack bytes, for a receiver that decodes it
 * itself (core.decode_prefix: a pool worker that must know which item of a
 * batch could not be decoded). */
static int l_receive_raw(lua_State *L)
{
    cp_messenger *m = self_open(L);
    cp_chan *c = get_chan(L, m, 2, 1);
    double timeout = opt_timeout(L, 3);
    for (;;) {
        if (try_receive_raw(L, m, c)) return 1;
        if (cp_messenger_exhausted(m, c)) return raise_down(L, m);
        int rc = cp_messenger_wait(m, c, 0, timeout);
        if (rc == 0) {
            if (try_receive_raw(L, m, c)) return 1;
            return cp_l_error(L, "Timeout", "no message within %f seconds", timeout);
        }
        raise_wait(L, rc);
    }
}

static int l_receive_available(lua_State *L)
{
    cp_messenger *m = self_open(L);
    cp_chan *c = get_chan(L, m, 2, 1);
    cp_messenger_flush_all();
    if (m->state == CP_M_OPEN) cp_messenger_pump(m);
    lua_newtable(L);
    int t = lua_gettop(L);
    lua_Integer n = 0;
    while (try_receive(L, m, c)) lua_rawseti(L, t, ++n);
    if (n == 0 && cp_messenger_exhausted(m, c)) return raise_down(L, m);
    return 1;
}

static int remaining_iter(lua_State *L)
{
    cp_messenger *m = open_at(L, lua_upvalueindex(1));
    lua_pushvalue(L, lua_upvalueindex(2));
    cp_chan *c = get_chan(L, m, lua_gettop(L), 1);
    if (c->requests_sent <= c->replies_received) return 0;
    for (;;) {
        if (try_receive(L, m, c)) return 1;
        if (cp_messenger_exhausted(m, c)) return raise_down(L, m);
        check_held(L, m, c);
        raise_wait(L, cp_messenger_wait(m, c, 0, -1));
    }
}

static int l_receive_remaining(lua_State *L)
{
    self_open(L);
    lua_settop(L, 2);
    lua_pushcclosure(L, remaining_iter, 2);
    return 1;
}

static int l_available(lua_State *L)
{
    cp_messenger *m = self_open(L);
    cp_chan *c = get_chan(L, m, 2, 0);
    cp_messenger_flush_all();
    if (m->state == CP_M_OPEN) cp_messenger_pump(m);
    lua_pushboolean(L, cp_messenger_has(m, c));
    return 1;
}

static int l_await_available(lua_State *L)
{
    cp_messenger *m = self_open(L);
    double timeout = opt_timeout(L, 2);
    int rc = cp_messenger_wait(m, NULL, 1, timeout);
    raise_wait(L, rc);
    lua_pushboolean(L, cp_messenger_queued(m) > 0);
    return 1;
}

static int l_pipe_poll(lua_State *L)
{
    cp_messenger *m = self_open(L);
    double timeout = opt_timeout(L, 2);
    lua_pushboolean(L, cp_messenger_poll(m, timeout));
    return 1;
}

/* ---- counters ---- */

/* What a per-channel counter method reports. */
enum count { UNANSWERED, REQUESTS_SENT, REPLIES_RECEIVED, QUEUED, REQUESTS_RECEIVED, REPLIES_SENT };

/* m:<counter>(channel): one per-channel counter (0 for a channel never used). */
static int channel_count(lua_State *L, enum count which)
{
    cp_messenger *m = self_open(L);
    cp_chan *c = get_chan(L, m, 2, 0);
    uint64_t v = 0;
    if (c) switch (which) {
        case UNANSWERED: v = c->requests_sent > c->replies_received ? c->requests_sent - c->replies_received : 0; break;
        case REQUESTS_SENT: v = c->requests_sent; break;
        case REPLIES_RECEIVED: v = c->replies_received; break;
        case QUEUED: v = c->q.n; break;
        case REQUESTS_RECEIVED: v = c->requests_received; break;
        case REPLIES_SENT: v = c->replies_sent; break;
    }
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

static int l_remaining(lua_State *L) { return channel_count(L, UNANSWERED); }
static int l_requests_sent(lua_State *L) { return channel_count(L, REQUESTS_SENT); }
static int l_replies_received(lua_State *L) { return channel_count(L, REPLIES_RECEIVED); }
static int l_requests_received(lua_State *L) { return channel_count(L, REQUESTS_RECEIVED); }
static int l_replies_sent(lua_State *L) { return channel_count(L, REPLIES_SENT); }

/* queue_size() -> messages queued on every channel; queue_size(channel) -> on that one. */
static int l_queue_size(lua_State *L)
{
    cp_messenger *m = self_open(L);
    if (lua_gettop(L) < 2) {
        lua_pushinteger(L, (lua_Integer)cp_messenger_queued(m));
        return 1;
    }
    return channel_count(L, QUEUED);
}

static int l_messages_sent(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)self_open(L)->messages_sent);
    return 1;
}

static int l_messages_received(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)self_open(L)->messages_received);
    return 1;
}

/* ---- plumbing ---- */

static int l_flush(lua_State *L)
{
    cp_messenger *m = self_open(L);
    double timeout = opt_timeout(L, 2);
    int rc = cp_messenger_flush(m, timeout);
    if (rc == CP_WAIT_DOWN) return raise_down(L, m);
    if (rc == CP_WAIT_HELD) return raise_held(L, m, NULL, "flush");
    raise_wait(L, rc);
    lua_pushboolean(L, rc == 1);
    return 1;
}

static int l_fileno(lua_State *L)
{
    lua_pushinteger(L, self_open(L)->fd);
    return 1;
}

static int l_is_closed(lua_State *L)
{
    lua_pushboolean(L, check(L, 1)->m.state == CP_M_CLOSED);
    return 1;
}

static int l_is_connected(lua_State *L)
{
    lua_pushboolean(L, check(L, 1)->m.state == CP_M_OPEN);
    return 1;
}

static int l_set_max_frame(lua_State *L)
{
    cp_messenger *m = self_open(L);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 64 && n <= (lua_Integer)UINT32_MAX, 2, "maximum frame size must be 64 .. 2^32-1 bytes");
    m->max_frame = (size_t)n;
    return 0;
}

/* ---- limits ---- */

static int l_set_send_timeout(lua_State *L)
{
    cp_messenger *m = self_open(L);
    m->send_timeout = opt_timeout(L, 2);
    return 0;
}

static int l_send_timeout(lua_State *L)
{
    cp_messenger *m = self_open(L);
    if (m->send_timeout < 0) lua_pushnil(L);
    else lua_pushnumber(L, m->send_timeout);
    return 1;
}

/* unsent() -> bytes sent but not yet taken by the socket (after writing
 * what it takes now). */
static int l_unsent(lua_State *L)
{
    cp_messenger *m = self_open(L);
    if (m->state == CP_M_OPEN && cp_messenger_unsent(m)) cp_messenger_flush_nb(m);
    lua_pushinteger(L, (lua_Integer)cp_messenger_unsent(m));
    return 1;
}

static int l_set_max_queued(lua_State *L)
{
    cp_messenger *m = self_open(L);
    size_t n = SIZE_MAX;
    if (!lua_isnoneornil(L, 2)) {
        lua_Integer v = luaL_checkinteger(L, 2);
        luaL_argcheck(L, v >= 0, 2, "limit must be a non-negative integer or nil");
        n = (size_t)v;
    }
    cp_messenger_set_max_queued(m, n);
    return 0;
}

static int l_max_queued(lua_State *L)
{
    cp_messenger *m = self_open(L);
    if (m->max_queued == SIZE_MAX) lua_pushnil(L);
    else lua_pushinteger(L, (lua_Integer)m->max_queued);
    return 1;
}

static int l_queued_bytes(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)self_open(L)->queued_bytes);
    return 1;
}

/* trust: m:set_trust("code"|"data"), m:trust(): what a decode of a received
 * payload accepts (codec.h, docs/protocol.md "Trust"). */
static int l_set_trust(lua_State *L)
{
    l_messenger *lm = cp_l_isclass(L, 1) ? lua_touserdata(L, 1) : check(L, 1);
    if (lm->m.state == CP_M_CLOSED) cp_l_closed(L, CP_MESSENGER_MT);
    luaL_checkany(L, 2);
    lm->trust = (int)cp_l_checktrust(L, 2);
    return 0;
}

static int l_trust(lua_State *L)
{
    lua_pushstring(L, cp_l_trustname(trust_of(self_open(L))));
    return 1;
}

/* Test hook: queue raw bytes as if they were frames (malformed input tests). */
static int l_send_raw(lua_State *L)
{
    cp_messenger *m = self_open(L);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (m->state != CP_M_OPEN) return raise_down(L, m);
    if (cp_messenger_send_raw(m, s, n)) return luaL_error(L, "out of memory");
    return 0;
}

/* coproc.wait(messengers, timeout) -> list of the ready ones */
static int l_wait(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = opt_timeout(L, 2);
    lua_Integer n = luaL_len(L, 1);
    luaL_argcheck(L, n <= 65536, 1, "too many messengers");
    cp_messenger **ms = lua_newuserdatauv(L, (size_t)(n ? n : 1) * (sizeof *ms + sizeof(int)), 0);
    int *ready = (int *)(ms + (n ? n : 1));
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        l_messenger *lm = luaL_testudata(L, -1, CP_MESSENGER_MT);
        if (!lm) return luaL_error(L, "bad argument #1 to 'wait' (item %d is not a coproc.Messenger)", (int)i);
        ms[i - 1] = &lm->m;
        lua_pop(L, 1);
    }
    int rc = cp_messenger_wait_many(ms, (int)n, ready, timeout);
    raise_wait(L, rc);
    lua_newtable(L);
    if (rc > 0) {
        lua_Integer k = 0;
        for (lua_Integer i = 1; i <= n; i++)
            if (ready[i - 1]) { lua_geti(L, 1, i); lua_rawseti(L, -2, ++k); }
    }
    return 1;
}

static const luaL_Reg methods[] = {
    {"send_request", l_send_request},
    {"send_reply", l_send_reply},
    {"send_norequest", l_send_norequest},
    {"send_request_multiple", l_send_request_multiple},
    {"send_request_slice", l_send_request_slice},
    {"send_reply_slice", l_send_reply_slice},
    {"send_close_request", l_send_close_request},
    {"send_error", l_send_error},
    {"receive_blocking", l_receive_blocking},
    {"receive_raw", l_receive_raw},
    {"receive_available", l_receive_available},
    {"receive_remaining", l_receive_remaining},
    {"available", l_available},
    {"await_available", l_await_available},
    {"pipe_poll", l_pipe_poll},
    {"remaining", l_remaining},
    {"requests_sent", l_requests_sent},
    {"replies_received", l_replies_received},
    {"requests_received", l_requests_received},
    {"replies_sent", l_replies_sent},
    {"queue_size", l_queue_size},
    {"messages_sent", l_messages_sent},
    {"messages_received", l_messages_received},
    {"flush", l_flush},
    {"fileno", l_fileno},
    {"close", l_close},
    {"is_closed", l_is_closed},
    {"is_connected", l_is_connected},
    {"set_max_frame", l_set_max_frame},
    {"set_send_timeout", l_set_send_timeout},
    {"send_timeout", l_send_timeout},
    {"unsent", l_unsent},
    {"set_max_queued", l_set_max_queued},
    {"max_queued", l_max_queued},
    {"queued_bytes", l_queued_bytes},
    {"set_trust", l_set_trust},     /* trust */
    {"trust", l_trust},             /* trust */
    {"_send_raw", l_send_raw},
    {NULL, NULL}
};

static const luaL_Reg meta[] = {
    {"__gc", l_gc},
    {"__close", l_gc},
    {"__tostring", l_tostring},
    {NULL, NULL}
};

/* ---- Ctrl-C under a stock interpreter ----
 *
 * coproc-lua's SIGINT handler calls coproc_interrupt, which wakes a blocked
 * wait. A stock lua5.4 only sets a Lua hook on its main thread (lua.c's
 * laction) and resets SIGINT to the default, so a wait that just went back
 * into epoll after the EINTR would let the hook fire only after it ends,
 * and a second Ctrl-C kills the interpreter. So every blocking wait notes
 * the main thread's hook when it begins (hook_mark) and, after each wake-up,
 * ends as interrupted when the hook has changed (hook_changed): only a
 * signal handler can set a hook while we are blocked in C. The wait then
 * raises "interrupted!" and the interpreter's hook runs as it returns.
 *
 * Why not a SIGINT handler of coproc's own, installed at require time and
 * chaining to the previous one? lua.c installs its handler again around
 * every chunk it runs (each REPL line, each -e), so ours would be replaced
 * at the next one; a handler installed around each wait costs system calls
 * on the hot path. A hook is what lua.c itself relies on, checking it costs
 * three loads per wake-up, and it works for any interpreter that interrupts
 * the way lua.c does.
 *
 * A hook that lua.c set just before the wait began (Ctrl-C between the last
 * Lua instruction and the mark) has its exact signature, all four masks with
 * count 1: that counts as a pending interrupt too, once (a tracer that uses
 * the same masks costs one spurious "interrupted!", not one per wait). A
 * signal that lands between a wake-up's check and the next epoll_wait is
 * seen only at the next wake-up; that window is a few instructions wide. */
#define LUA_C_STOP_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT)

static lua_State *g_main;  /* main thread of the state that loaded us; NULL once closed */
static lua_Hook g_seen_hook, g_reported_hook;
static int g_seen_mask, g_seen_count;

static void hook_mark(void)
{
    if (!g_main) return;
    g_seen_hook = lua_gethook(g_main);
    g_seen_mask = lua_gethookmask(g_main);
    g_seen_count = lua_gethookcount(g_main);
    if (g_seen_hook != g_reported_hook) g_reported_hook = NULL; /* that one is gone */
}

static int hook_changed(void)
{
    if (!g_main) return 0;
    lua_Hook h = lua_gethook(g_main);
    if (h == NULL) return 0;
    int mask = lua_gethookmask(g_main), count = lua_gethookcount(g_main);
    if (h != g_seen_hook || mask != g_seen_mask || count != g_seen_count) return 1;
    if (mask == LUA_C_STOP_MASK && count == 1 && h != g_reported_hook) {
        g_reported_hook = h;
        return 1;
    }
    return 0;
}

static const char MAIN_SENTINEL = 'm'; /* registry[&MAIN_SENTINEL]: clears g_main at lua_close */

static int main_sentinel_gc(lua_State *L)
{
    lua_State **box = lua_touserdata(L, 1);
    if (box && g_main == *box) g_main = NULL;
    return 0;
}

static void watch_interrupts(lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lua_State *main = lua_tothread(L, -1);
    lua_pop(L, 1);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &MAIN_SENTINEL) == LUA_TNIL) {
        lua_State **box = lua_newuserdatauv(L, sizeof *box, 0);
        *box = main;
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, main_sentinel_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &MAIN_SENTINEL);
    }
    lua_pop(L, 1);
    g_main = main;
    cp_loop_set_interrupt_check(hook_mark, hook_changed);
}

void cp_l_messenger_open(lua_State *L, int t)
{
    t = lua_absindex(L, t);
    watch_interrupts(L);
    /* Methods get upvalues: 1 the metatable (fast self check), 2 the
     * interned key "priority". */
    lua_pushliteral(L, "priority");
    cp_l_newclass(L, CP_MESSENGER_MT, methods, meta, 1);
    luaL_getmetatable(L, CP_MESSENGER_MT);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, t, "Messenger");   /* method table, for extension in Lua */
    lua_pop(L, 1);
    lua_pushcfunction(L, l_wait);
    lua_setfield(L, t, "wait");
}
