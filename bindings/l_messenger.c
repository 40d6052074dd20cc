/* l_messenger.c: coproc.Messenger, one end of a worker connection.
 *
 * Misuse (bad argument types) raises Lua argument errors; runtime failures
 * raise coproc error objects (Timeout, WorkerDied, WorkerError, EncodeError,
 * ProtocolError, ResourceRequestedClose, QueueFull). */
#include "lcore.h"
#include "lmessenger.h"
#include "codec.h"
#include "loop.h"
#include "lwaiter.h"

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
    /* user values: 1 the worker's process (l_spawn.c), 2 close hooks */
    l_messenger *lm = lua_newuserdatauv(L, sizeof *lm, 2);
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

/* The close hooks (core.on_close) run once, before the fd is closed: an
 * event loop that polls the fd must stop first (the number may be reused
 * at once, and a poll on it would then watch another file). */
static void run_close_hooks(lua_State *L, int i)
{
    if (lua_getiuservalue(L, i, 2) != LUA_TTABLE) {
        lua_pop(L, 1);
        return;
    }
    lua_pushnil(L);
    lua_setiuservalue(L, i, 2);
    int hooks = lua_gettop(L);
    for (lua_Integer k = 1; lua_rawgeti(L, hooks, k) == LUA_TFUNCTION; k++) {
        lua_pushvalue(L, i);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1); /* a hook's error is its own */
    }
    lua_settop(L, hooks - 1);
}

/* What close() waits at most for the peer to take what is still to be
 * written (a peer that reads takes it at once; one that does not loses it). */
#define CLOSE_FLUSH_SECONDS 1.0

static int l_close(lua_State *L)
{
    l_messenger *lm = check(L, 1);
    if (lm->m.state == CP_M_OPEN && lm->m.owner == cp_self_pid() && cp_buf_size(&lm->m.out))
        cp_messenger_flush(&lm->m, CLOSE_FLUSH_SECONDS);
    if (lm->m.fd >= 0) run_close_hooks(L, 1);
    cp_messenger_close(&lm->m);
    return 0;
}

/* core.on_close(m, fn): fn(m) runs once when m is closed, before its fd. */
static int l_on_close(lua_State *L)
{
    check(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (lua_getiuservalue(L, 1, 2) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 1, 0);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, 1, 2);
    }
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

static int l_gc(lua_State *L)
{
    l_messenger *lm = check(L, 1);
    /* A finaliser in a forked child must not act on the parent's loop. */
    if (lm->m.owner == 0 || lm->m.owner == getpid()) {
        /* As __close (called with two arguments) it runs the close hooks, as
         * close() does; as __gc it runs none: at lua_close the loop a hook
         * would act on may be gone already. */
        if (lua_gettop(L) >= 2 && lm->m.fd >= 0) run_close_hooks(L, 1);
        cp_messenger_close(&lm->m);
    }
    return 0;
}

static int l_tostring(lua_State *L)
{
    l_messenger *lm = check(L, 1);
    static const char *names[] = {"closed", "open", "peer gone", "broken"};
    const char *label = cp_messenger_label(&lm->m);
    if (lm->m.peer)
        lua_pushfstring(L, "coproc.Messenger(%s, worker %d, %p)", names[lm->m.state], (int)lm->m.peer->pid, (void *)lm);
    else if (label)
        lua_pushfstring(L, "coproc.Messenger(%s, %s, %p)", names[lm->m.state], label, (void *)lm);
    else
        lua_pushfstring(L, "coproc.Messenger(%s, %p)", names[lm->m.state], (void *)lm);
    return 1;
}

/* ---- arguments ---- */

typedef struct chankey { char b[CP_CHANNEL_MAX + 16]; size_t n; } chankey;

/* NULL when the value at i is a channel (its key bytes in *k), else what
 * is wrong with it. */
static const char *channel_problem_t(lua_State *L, int i, int type, chankey *k)
{
    switch (type) {
    case LUA_TNONE: case LUA_TNIL: k->n = cp_channel_nil(k->b); return NULL;
    case LUA_TBOOLEAN: k->n = cp_channel_bool(k->b, lua_toboolean(L, i)); return NULL;
    case LUA_TNUMBER: {
        int isint;
        lua_Integer v = lua_tointegerx(L, i, &isint);
        if (isint) { k->n = cp_channel_int(k->b, v); return NULL; }
        break;
    }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, i, &n);
        if (n > CP_CHANNEL_MAX) return "channel name longer than 255 bytes";
        k->n = cp_channel_str(k->b, s, n);
        return NULL;
    }
    }
    return "channel must be nil, a boolean, an integer or a string";
}

static const char *channel_problem(lua_State *L, int i, chankey *k)
{
    return channel_problem_t(L, i, lua_type(L, i), k);
}

static void check_channel(lua_State *L, int i, chankey *k)
{
    const char *why = channel_problem(L, i, k);
    if (why) luaL_argerror(L, i, why);
}

static cp_chan *get_chan(lua_State *L, cp_messenger *m, int i, int create)
{
    chankey k;
    check_channel(L, i, &k);
    cp_chan *c = cp_messenger_chan(m, k.b, k.n, create);
    if (!c && create) luaL_error(L, "out of memory");
    return c;
}

cp_chan *cp_l_messenger_chan(lua_State *L, cp_messenger *m, int i, int create)
{
    return get_chan(L, m, i, create);
}

l_messenger *cp_l_messenger_at(lua_State *L, int i) { return check(L, i); }

/* Explicit priority, else data.priority for a table payload, else +inf.
 * A raw get: sending runs none of the value's metamethods (a "strict"
 * class whose __index raises can be sent; a proxy's __index is not asked). */
static double get_priority(lua_State *L, int data, int i)
{
    double p = INFINITY;
    if (!lua_isnoneornil(L, i)) p = luaL_checknumber(L, i);
    else if (lua_type(L, data) == LUA_TTABLE) {
        lua_pushvalue(L, lua_upvalueindex(2)); /* "priority", interned once */
        if (lua_rawget(L, data) == LUA_TNUMBER) p = lua_tonumber(L, -1);
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

/* [-0, +1, m] Push the error that says why nothing more will come. */
static void push_down(lua_State *L, cp_messenger *m)
{
    luaL_checkstack(L, 4, NULL);
    if (m->state == CP_M_BROKEN) {
        cp_l_pusherror(L, "ProtocolError", "connection dropped after a bad frame: %s", m->error);
        cp_l_finish_error(L);
        return;
    }
    if (m->state == CP_M_CLOSED) luaL_error(L, "attempt to use a closed messenger");
    const char *label = cp_messenger_label(m);
    if (!m->peer && label) {
        /* A worker on another transport (an MPI rank): no process to ask. */
        int unanswered = sum_remaining(m);
        cp_l_pusherror(L, "WorkerDied", "%s closed its connection (%d request(s) unanswered)", label, unanswered);
        lua_pushinteger(L, unanswered);
        lua_setfield(L, -2, "unanswered");
        cp_l_finish_error(L);
        return;
    }
    if (!m->peer) {
        /* Worker side (or a pair): the other end is gone or closed; end quietly. */
        cp_l_pusherror(L, "ResourceRequestedClose", "the host closed the connection");
        cp_l_finish_error(L);
        return;
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
    cp_l_finish_error(L);
}

/* Raise the error that says why nothing more will come. */
static int raise_down(lua_State *L, cp_messenger *m)
{
    push_down(L, m);
    return lua_error(L);
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

/* [-0, +1, m] Push QueueFull: reading is held back because the queues are over their
 * bound, and what the caller waits for (a message of channel want, or with
 * want NULL the peer reading what we sent: doing says which) cannot come
 * until queued messages are read. Fields: channel, messages, bytes, limit. */
static void push_held(lua_State *L, cp_messenger *m, const cp_chan *want, const char *doing)
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
    cp_l_finish_error(L);
    lua_replace(L, name - 1); /* the error in place of the values below it */
    lua_settop(L, name - 1);
}

/* trust: the mode of the binding holding m (its first member). */
static cp_trust trust_of(const cp_messenger *m)
{
    return (cp_trust)((const l_messenger *)(const void *)m)->trust;
}

static int raise_held(lua_State *L, cp_messenger *m, const cp_chan *want, const char *doing)
{
    push_held(L, m, want, doing);
    return lua_error(L);
}

/* [-0, +1, m] Push the error a CLOSE or ERROR message stands for
 * (consumes it). */
static void push_special(lua_State *L, cp_messenger *m, cp_msg *msg)
{
    int kind = msg->kind;
    int base = lua_gettop(L);
    char err[CP_CODEC_ERRLEN];
    int ok = cp_codec_decode_trust(L, msg->data, msg->len, trust_of(m), err, sizeof err) == 0;
    cp_msg_free(msg);
    if (kind == CP_KIND_CLOSE) {
        if (ok) lua_pop(L, 1);
        cp_l_pusherror(L, "ResourceRequestedClose", "the other side requested close");
        cp_l_finish_error(L);
        return;
    }
    const char *text = ok ? "(an error without a message)"
                          : lua_pushfstring(L, "(an error the receiver cannot decode: %s)", err);
    int info = lua_gettop(L);
    if (ok && lua_type(L, -1) == LUA_TTABLE) {
        lua_getfield(L, info, "message");
        if (lua_isstring(L, -1)) text = lua_tostring(L, -1);
    } else if (ok && lua_isstring(L, -1)) {
        text = lua_tostring(L, -1);
    }
    const char *cls = "", *sep = "";
    if (ok && lua_type(L, info) == LUA_TTABLE && lua_getfield(L, info, "class") == LUA_TSTRING) {
        cls = lua_tostring(L, -1); /* stays on the stack until we raise */
        sep = ": ";
    }
    const char *label = cp_messenger_label(m);
    if (m->peer) cp_l_pusherror(L, "WorkerError", "worker %d: %s%s%s", (int)m->peer->pid, cls, sep, text);
    else if (label) cp_l_pusherror(L, "WorkerError", "%s: %s%s%s", label, cls, sep, text);
    else cp_l_pusherror(L, "WorkerError", "host: %s%s%s", cls, sep, text);
    int e = lua_gettop(L);
    lua_pushstring(L, text);
    lua_setfield(L, e, "remote_message");
    if (m->peer) { lua_pushinteger(L, m->peer->pid); lua_setfield(L, e, "pid"); }
    if (ok && lua_type(L, info) == LUA_TTABLE) {
        lua_getfield(L, info, "traceback");
        lua_setfield(L, e, "traceback");
        lua_getfield(L, info, "class");
        lua_setfield(L, e, "remote_class");
        /* The error value itself: as sent, or a coproc error rebuilt from
         * its class and fields (a Timeout raised there is one here too). */
        if (lua_getfield(L, info, "value") != LUA_TNIL) {
            lua_setfield(L, e, "value");
        } else {
            lua_pop(L, 1);
            if (lua_getfield(L, info, "class") == LUA_TSTRING) {
                int cname = lua_gettop(L);
                lua_createtable(L, 0, 4);
                if (lua_getfield(L, info, "fields") == LUA_TTABLE) {
                    lua_pushnil(L);
                    while (lua_next(L, -2)) {
                        lua_pushvalue(L, -2);
                        lua_insert(L, -2);
                        lua_rawset(L, -5);
                    }
                }
                lua_pop(L, 1);
                lua_pushvalue(L, cname);
                lua_setfield(L, -2, "class");
                lua_pushstring(L, text);
                lua_setfield(L, -2, "message");
                cp_l_finish_error(L);
                lua_setfield(L, e, "value");
            }
            lua_pop(L, 1);
        }
    }
    cp_l_finish_error(L);
    /* Only the error stays: the decoded info and its message go. */
    if (lua_gettop(L) > base + 1) {
        lua_replace(L, base + 1);
        lua_settop(L, base + 1);
    }
}

static void raise_wait(lua_State *L, int rc)
{
    if (rc == -1) cp_l_error(L, "Interrupted", "interrupted!");
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
    /* A large string is written from where it is (anchored on the stack
     * here), not copied into the outbound buffer first. */
    size_t direct = 0;
    const char *ds = !sl && kind == CP_KIND_DATA && lua_type(L, data) == LUA_TSTRING ? lua_tolstring(L, data, &direct) : NULL;
    if (direct < CP_DIRECT_MIN) direct = 0;
    int rc = direct ? cp_codec_str_head(out, direct)
           : sl ? cp_codec_encode_slice(L, data, sl->list, sl->lo, sl->hi, out, err, sizeof err)
                : cp_codec_encode(L, data, out, err, sizeof err);
    if (rc) {
        cp_messenger_abort(m, mark);
        cp_l_error(L, "EncodeError", "cannot send: %s", direct ? "out of memory" : err);
    }
    size_t size = out->len - mark + direct;
    rc = direct ? cp_messenger_commit_direct(m, mark, ds, direct) : cp_messenger_commit(m, mark);
    if (rc == -1)
        cp_l_error(L, "EncodeError", "cannot send: message of %d bytes exceeds the maximum frame size of %d bytes",
                   (int)(size > INT_MAX ? INT_MAX : size), (int)(m->max_frame > INT_MAX ? INT_MAX : m->max_frame));
    if (rc) raise_down(L, m);
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

/* send_error(err): an ERROR frame, normalised to {message, traceback,
 * class, value, fields}: class is a coproc error's class name and fields
 * its other fields (plain data); value an error value that is neither a
 * string nor a coproc error (error({code = 404})). A value or fields that
 * cannot be sent are left out rather than losing the error. */
static int l_send_error(lua_State *L)
{
    cp_messenger *m = self_open(L);
    lua_settop(L, 2);
    lua_createtable(L, 0, 5);
    int t = 3;
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_getfield(L, 2, "traceback");
        lua_setfield(L, t, "traceback");
        lua_getfield(L, 2, "class");
        if (lua_type(L, -1) == LUA_TTABLE) { lua_getfield(L, -1, "name"); lua_remove(L, -2); }
        if (!lua_isstring(L, -1)) { lua_pop(L, 1); lua_pushnil(L); }
        lua_setfield(L, t, "class");
        lua_getfield(L, 2, "value");
        lua_setfield(L, t, "value");
        lua_getfield(L, 2, "fields");
        lua_setfield(L, t, "fields");
        lua_getfield(L, 2, "message");
        if (lua_isstring(L, -1)) { lua_setfield(L, t, "message"); goto send; }
        lua_pop(L, 1);
    }
    luaL_tolstring(L, 2, NULL);
    lua_setfield(L, t, "message");
send:;
    chankey k;
    k.n = cp_channel_nil(k.b);
    char err[CP_CODEC_ERRLEN];
    cp_buf probe = CP_BUF_INIT;
    if (cp_codec_encode(L, t, &probe, err, sizeof err)) {
        lua_pushnil(L);
        lua_setfield(L, t, "value");
        lua_pushnil(L);
        lua_setfield(L, t, "fields");
    }
    cp_buf_free(&probe);
    send_one(L, m, CP_KIND_ERROR, t, NULL, &k, 0, 0);
    cp_messenger_flush_nb(m);
    return 0;
}

/* ---- receiving ----
 *
 * Every receive that may wait runs one loop (recv_loop): take a message if
 * one is queued; fail when nothing more can come (raise, or for try_receive
 * return nil, err); else wait, in the running coroutine's scheduler when
 * it has a waiter (lwaiter.h: the call yields there and goes on in recv_k)
 * or in the loop. Its state is on the stack, so it survives a yield:
 * 1 the messenger, 2 the channel, 3 the timeout as given (nil: none),
 * 4 the deadline (nil: none). The flags are the continuation's context. */
enum {
    RV_VALUE = 0, RV_RAW = 1, RV_MESSAGE = 2, RV_MODE = 3, /* what a message gives */
    RV_TRY = 4,        /* runtime failures are returned as nil, err */
    RV_REMAINING = 8,  /* a step of receive_remaining(_messages): ends at remaining 0 */
    RV_NOYIELD = 16    /* the waiter declined: block in the loop */
};

/* The error on top is the outcome: raise it, or return nil, err. */
static int fail(lua_State *L, int flags)
{
    if (!(flags & RV_TRY)) return lua_error(L);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* [-0, +1, m] Push the message table of msg, taken from channel c:
 * {data, channel, is_request, is_reply, priority}. Returns 0, or -1 (the
 * error pushed instead) when the payload does not decode. Consumes msg. */
static int push_message(lua_State *L, cp_messenger *m, const cp_chan *c, cp_msg *msg)
{
    luaL_checkstack(L, 6, NULL);
    lua_createtable(L, 0, 5);
    char err[CP_CODEC_ERRLEN];
    if (cp_codec_decode_trust(L, msg->data, msg->len, trust_of(m), err, sizeof err)) {
        cp_msg_free(msg);
        cp_l_pusherror(L, "ProtocolError", "cannot decode a message: %s", err);
        cp_l_finish_error(L);
        lua_remove(L, -2);
        return -1;
    }
    lua_setfield(L, -2, "data");
    push_channel(L, c->key, c->keylen);
    lua_pop(L, 1);
    lua_setfield(L, -2, "channel");
    lua_pushboolean(L, (msg->flags & CP_FLAG_REQUEST) != 0);
    lua_setfield(L, -2, "is_request");
    lua_pushboolean(L, (msg->flags & CP_FLAG_REPLY) != 0);
    lua_setfield(L, -2, "is_reply");
    if (!m->arrival_order) { /* a MultiMessenger queues by arrival and keeps none */
        lua_pushnumber(L, msg->priority);
        lua_setfield(L, -2, "priority");
    }
    cp_messenger_done(m, msg);
    return 0;
}

/* Take the next message of channel c if there is one: push what it gives
 * (flags & RV_MODE) and return the number of results. 0 when nothing is
 * queued. A close request or error from the other side, or a payload that
 * does not decode, fails. */
static int take(lua_State *L, cp_messenger *m, cp_chan *c, int flags)
{
    cp_msg *msg = m->special.n ? cp_messenger_pop_special(m) : NULL;
    if (msg) {
        push_special(L, m, msg);
        return fail(L, flags);
    }
    msg = cp_messenger_pop(m, c);
    if (!msg) return 0;
    char err[CP_CODEC_ERRLEN];
    switch (flags & RV_MODE) {
    case RV_RAW:
        lua_pushlstring(L, msg->data, msg->len);
        cp_messenger_done(m, msg);
        return 1;
    case RV_MESSAGE:
        if (push_message(L, m, c, msg)) return fail(L, flags);
        return 1;
    default:
        if (cp_codec_decode_trust(L, msg->data, msg->len, trust_of(m), err, sizeof err)) {
            cp_msg_free(msg);
            cp_l_pusherror(L, "ProtocolError", "cannot decode a message: %s", err);
            cp_l_finish_error(L);
            return fail(L, flags);
        }
        cp_messenger_done(m, msg); /* a large frame's block is kept for the next */
        return 1;
    }
}

/* A receive_remaining step took a message: nil stands as coproc.null (a
 * nil would end the loop), then the count so far (upvalue 3). */
static int remaining_result(lua_State *L, int flags)
{
    if ((flags & RV_MODE) == RV_VALUE && lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushlightuserdata(L, NULL);
    }
    lua_Integer k = lua_tointeger(L, lua_upvalueindex(3)) + 1;
    lua_pushinteger(L, k);
    lua_copy(L, -1, lua_upvalueindex(3));
    return 2;
}

static int recv_k(lua_State *L, int status, lua_KContext ctx);

static int recv_loop(lua_State *L, cp_messenger *m, int flags)
{
    cp_chan *c = get_chan(L, m, 2, 1);
    int waited = 0; /* the loop ran up to the deadline just now */
    for (;;) {
        if ((flags & RV_REMAINING) && c->requests_sent <= c->replies_received) return 0;
        int n = take(L, m, c, flags);
        if (n) return (flags & RV_REMAINING) && n == 1 ? remaining_result(L, flags) : n;
        if (cp_messenger_exhausted(m, c)) {
            push_down(L, m);
            return fail(L, flags);
        }
        if (cp_messenger_held(m) && !cp_messenger_has(m, c)) {
            /* waiting could only end if we read past the bound */
            push_held(L, m, c, NULL);
            return fail(L, flags);
        }
        double left = -1;
        if (!lua_isnil(L, 4)) {
            left = lua_tonumber(L, 4) - cp_now();
            if (left <= 0) {
                /* a last look at what has already arrived (unless the loop
                 * has just run until now) */
                if (!waited) {
                    cp_messenger_wait(m, c, 0, 0);
                    if ((n = take(L, m, c, flags))) return n;
                }
                if (cp_messenger_exhausted(m, c)) {
                    push_down(L, m);
                    return fail(L, flags);
                }
                cp_l_pusherror(L, "Timeout", "no message within %f seconds", lua_tonumber(L, 3));
                cp_l_finish_error(L);
                return fail(L, flags);
            }
        }
        if (!(flags & RV_NOYIELD) && cp_l_waiter_push(L)) {
            cp_l_push_request(L, 1, 2, 'r', 0, left);
            lua_callk(L, 1, 1, flags, recv_k);
            return recv_k(L, LUA_OK, flags);
        }
        int rc = cp_messenger_wait(m, c, 0, left);
        raise_wait(L, rc);
        waited = rc == 0;
    }
}

/* Back from the waiter (after a yield, or not): true when it waited. */
static int recv_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    int flags = (int)ctx;
    int waited = lua_toboolean(L, -1);
    lua_settop(L, 4);
    cp_messenger *m = open_at(L, 1);
    if (!waited) flags |= RV_NOYIELD;
    /* A foreign scheduler saw the socket readable: read what is there. */
    else cp_messenger_wait(m, get_chan(L, m, 2, 1), 0, 0);
    return recv_loop(L, m, flags);
}

/* Names for "did you mean": the options of the receive calls. */
static const char *const RECV_OPTIONS[] = {"channel", "timeout", NULL};

/* Edit distance of two short strings, capped at 3. */
static int distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 32 || lb > 32) return 3;
    if ((la > lb ? la - lb : lb - la) > 2) return 3;
    int prev[33], cur[33];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int v = prev[j] + 1;
            if (cur[j - 1] + 1 < v) v = cur[j - 1] + 1;
            if (prev[j - 1] + (a[i - 1] != b[j - 1]) < v) v = prev[j - 1] + (a[i - 1] != b[j - 1]);
            cur[j] = v;
        }
        memcpy(prev, cur, sizeof prev);
    }
    return prev[lb] < 3 ? prev[lb] : 3;
}

/* An options table at index 2: only keys of RECV_OPTIONS; then channel
 * and timeout moved to 2 and 3 (the positional form). */
static void recv_options(lua_State *L, const char *fname)
{
    if (!lua_isnone(L, 3))
        luaL_error(L, "bad argument #3 to '%s' (nothing may follow an options table)", fname);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        lua_pop(L, 1);
        int known = 0;
        const char *best = NULL;
        int bestd = 3;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            for (int i = 0; RECV_OPTIONS[i]; i++) {
                if (!strcmp(k, RECV_OPTIONS[i])) known = 1;
                int d = distance(k, RECV_OPTIONS[i]);
                if (d < bestd) { bestd = d; best = RECV_OPTIONS[i]; }
            }
            if (!known) {
                if (best) luaL_error(L, "bad option '%s' to '%s' (did you mean '%s'?)", k, fname, best);
                luaL_error(L, "bad option '%s' to '%s'", k, fname);
            }
        } else if (!known) {
            luaL_error(L, "bad option %s to '%s'", luaL_tolstring(L, -1, NULL), fname);
        }
    }
    lua_getfield(L, 2, "channel");
    lua_getfield(L, 2, "timeout");
    if (!lua_isnil(L, -1)) {
        double t = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
        if (!(t >= 0))
            luaL_error(L, "bad option 'timeout' to '%s' (non-negative number expected, got %s)", fname,
                       luaL_tolstring(L, -1, NULL));
    }
    lua_remove(L, 2); /* 1 the messenger, 2 the channel, 3 the timeout */
    chankey k;
    const char *why = channel_problem(L, 2, &k);
    if (why) luaL_error(L, "bad option 'channel' to '%s' (%s)", fname, why);
}

/* Arguments (channel, timeout) or ({channel =, timeout =}) to the loop's
 * stack. dflt: the timeout when none is given (< 0: none). */
static void recv_args(lua_State *L, const char *fname, double dflt)
{
    if (lua_type(L, 2) == LUA_TTABLE) recv_options(L, fname);
    lua_settop(L, 3);
    double t = lua_isnil(L, 3) ? dflt : opt_timeout(L, 3);
    if (t >= 0 && lua_isnil(L, 3)) { lua_pushnumber(L, t); lua_replace(L, 3); }
    if (t < 0) lua_pushnil(L);
    else lua_pushnumber(L, cp_now() + t);
}

static int receive_with(lua_State *L, const char *fname, int flags, double dflt)
{
    cp_messenger *m = self_open(L);
    int t2 = lua_type(L, 2);
    if (t2 != LUA_TTABLE) {
        /* The common case first, without building the loop's stack: a
         * message is queued already (streaming, a reply read meanwhile). */
        if (!lua_isnoneornil(L, 3)) opt_timeout(L, 3);
        chankey k;
        const char *why = channel_problem_t(L, 2, t2, &k);
        if (why) luaL_argerror(L, 2, why);
        cp_chan *c = cp_messenger_chan(m, k.b, k.n, 1);
        if (!c) luaL_error(L, "out of memory");
        if (cp_messenger_has(m, c)) return take(L, m, c, flags);
    }
    recv_args(L, fname, dflt);
    return recv_loop(L, m, flags);
}

/* receive_blocking(channel, timeout) -> data */
static int l_receive_blocking(lua_State *L) { return receive_with(L, "receive_blocking", RV_VALUE, -1); }

/* receive_message_blocking(channel, timeout) -> message table */
static int l_receive_message_blocking(lua_State *L)
{
    return receive_with(L, "receive_message_blocking", RV_MESSAGE, -1);
}

/* try_receive(channel, timeout = 0) -> data, or nil, err: a runtime failure
 * (Timeout, the connection down, a close request, an error of the other
 * side, QueueFull, an undecodable payload) is returned, not raised. */
static int l_try_receive(lua_State *L) { return receive_with(L, "try_receive", RV_VALUE | RV_TRY, 0); }

/* receive_raw(channel, timeout): receive_blocking without the decode: the
 * payload as a string of msgpack bytes, for a receiver that decodes it
 * itself (core.decode_prefix: a pool worker that must know which item of a
 * batch could not be decoded). */
static int l_receive_raw(lua_State *L) { return receive_with(L, "receive_raw", RV_RAW, -1); }

/* What has arrived on channel c, as a list with .n (nil values leave holes). */
static int available_list(lua_State *L, int flags)
{
    cp_messenger *m = self_open(L);
    cp_chan *c = get_chan(L, m, 2, 1);
    cp_messenger_flush_all();
    if (m->state == CP_M_OPEN) cp_messenger_pump(m);
    lua_settop(L, 2);
    lua_createtable(L, c->q.n < 1024 ? (int)c->q.n : 1024, 1);
    lua_Integer n = 0;
    while (take(L, m, c, flags)) lua_rawseti(L, 3, ++n);
    if (n == 0 && cp_messenger_exhausted(m, c)) return raise_down(L, m);
    lua_pushinteger(L, n);
    lua_setfield(L, 3, "n");
    return 1;
}

static int l_receive_available(lua_State *L) { return available_list(L, RV_VALUE); }
static int l_receive_available_messages(lua_State *L) { return available_list(L, RV_MESSAGE); }

/* The iterators of receive_remaining(_messages): upvalues 1 the messenger,
 * 2 the channel, 3 the count so far. */
static int remaining_step(lua_State *L, int flags)
{
    lua_settop(L, 0);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushnil(L);
    lua_pushnil(L);
    return recv_loop(L, open_at(L, 1), flags | RV_REMAINING);
}

static int remaining_iter(lua_State *L) { return remaining_step(L, RV_VALUE); }
static int remaining_messages_iter(lua_State *L) { return remaining_step(L, RV_MESSAGE); }

static int remaining_with(lua_State *L, lua_CFunction iter)
{
    cp_messenger *m = self_open(L);
    get_chan(L, m, 2, 1);
    lua_settop(L, 2);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, iter, 3);
    return 1;
}

/* for reply, i in m:receive_remaining(channel): reply (coproc.null for a
 * nil reply), i = 1, 2, ... until remaining(channel) is 0. */
static int l_receive_remaining(lua_State *L) { return remaining_with(L, remaining_iter); }
static int l_receive_remaining_messages(lua_State *L) { return remaining_with(L, remaining_messages_iter); }

static int l_available(lua_State *L)
{
    cp_messenger *m = self_open(L);
    get_chan(L, m, 2, 0); /* a bad channel raises before anything is read */
    cp_messenger_flush_all();
    if (m->state == CP_M_OPEN) cp_messenger_pump(m);
    /* looked up after reading: the channel's record may be new */
    cp_chan *c = get_chan(L, m, 2, 0);
    lua_pushboolean(L, cp_messenger_has(m, c));
    return 1;
}

/* await_available(timeout): stack 1 the messenger, 2 the timeout, 3 the
 * deadline. */
static int await_k(lua_State *L, int status, lua_KContext ctx);

static int await_loop(lua_State *L, int noyield)
{
    cp_messenger *m = open_at(L, 1);
    for (;;) {
        if (cp_messenger_ready_any(m)) break;
        double left = -1;
        if (!lua_isnil(L, 3)) {
            left = lua_tonumber(L, 3) - cp_now();
            if (left <= 0) { cp_messenger_wait(m, NULL, 1, 0); break; }
        }
        if (!noyield && cp_l_waiter_push(L)) {
            cp_l_push_request(L, 1, 0, 'a', 0, left);
            lua_callk(L, 1, 1, 0, await_k);
            return await_k(L, LUA_OK, 0);
        }
        int rc = cp_messenger_wait(m, NULL, 1, left);
        raise_wait(L, rc);
        break;
    }
    lua_pushboolean(L, cp_messenger_queued(m) > 0);
    return 1;
}

static int await_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status; (void)ctx;
    int waited = lua_toboolean(L, -1);
    lua_settop(L, 3);
    if (waited) cp_messenger_wait(open_at(L, 1), NULL, 1, 0);
    return await_loop(L, !waited);
}

static int l_await_available(lua_State *L)
{
    self_open(L);
    double timeout = opt_timeout(L, 2);
    lua_settop(L, 2);
    if (timeout < 0) lua_pushnil(L);
    else lua_pushnumber(L, cp_now() + timeout);
    cp_messenger *m = open_at(L, 1);
    cp_messenger_wait(m, NULL, 1, 0); /* flush, and take in what is there */
    return await_loop(L, timeout == 0);
}

static int l_pipe_poll(lua_State *L)
{
    cp_messenger *m = self_open(L);
    double timeout = opt_timeout(L, 2);
    lua_pushboolean(L, cp_messenger_poll(m, timeout));
    return 1;
}

/* ---- the pollable contract (docs/eventloops.md) ---- */

/* Write what the socket takes now, so nothing stays corked. */
static void uncork(cp_messenger *m)
{
    if (cp_messenger_corked(m)) cp_messenger_flush_nb(m);
}

/* pending() -> true when a message is queued (any channel) or output is
 * still unsent; pending(channel) -> true when a receive on that channel
 * would not wait (a message of it, a close request or error, the
 * connection down, reading held back). Both write what the socket takes
 * first. */
static int l_pending(lua_State *L)
{
    cp_messenger *m = self_open(L);
    uncork(m);
    if (lua_gettop(L) < 2) {
        lua_pushboolean(L, cp_messenger_queued(m) > 0 || cp_messenger_unsent(m) > 0);
        return 1;
    }
    cp_chan *c = get_chan(L, m, 2, 0);
    lua_pushboolean(L, cp_messenger_ready(m, c));
    return 1;
}

/* cqueues: pollfd(), events() ("r", or "rw" while output is unsent after
 * writing what the socket takes), timeout() (0 while a message is queued:
 * the socket may be quiet then, nil otherwise). */
static int l_events(lua_State *L)
{
    cp_messenger *m = self_open(L);
    uncork(m);
    if (cp_messenger_unsent(m) > 0) lua_pushliteral(L, "rw");
    else lua_pushliteral(L, "r");
    return 1;
}

static int l_timeout(lua_State *L)
{
    cp_messenger *m = self_open(L);
    if (cp_messenger_queued(m) > 0 || m->state != CP_M_OPEN) lua_pushnumber(L, 0);
    else lua_pushnil(L);
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

/* flush(timeout) -> true once everything sent is written, false on
 * timeout. In a coroutine with a waiter it waits there. Stack: 1 the
 * messenger, 2 the timeout, 3 the deadline (nil: none). */
static int flush_k(lua_State *L, int status, lua_KContext ctx);

static int flush_loop(lua_State *L, int noyield)
{
    cp_messenger *m = open_at(L, 1);
    double left = -1;
    if (!lua_isnil(L, 3)) {
        left = lua_tonumber(L, 3) - cp_now();
        if (left < 0) left = 0;
    }
    if (!noyield && left != 0 && lua_isyieldable(L)) {
        if (cp_messenger_flush_nb(m) < 0) return raise_down(L, m);
        if (cp_messenger_unsent(m) == 0) { lua_pushboolean(L, 1); return 1; }
        if (!cp_messenger_held(m) && cp_l_waiter_push(L)) {
            cp_l_push_request(L, 1, 0, 'w', 0, left);
            lua_callk(L, 1, 1, 0, flush_k);
            return flush_k(L, LUA_OK, 0);
        }
    }
    int rc = cp_messenger_flush(m, left);
    if (rc == CP_WAIT_DOWN) return raise_down(L, m);
    if (rc == CP_WAIT_HELD) return raise_held(L, m, NULL, "flush");
    raise_wait(L, rc);
    lua_pushboolean(L, rc == 1);
    return 1;
}

static int flush_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status; (void)ctx;
    int waited = lua_toboolean(L, -1);
    lua_settop(L, 3);
    return flush_loop(L, !waited);
}

static int l_flush(lua_State *L)
{
    self_open(L);
    double timeout = opt_timeout(L, 2);
    lua_settop(L, 2);
    if (timeout < 0) lua_pushnil(L);
    else lua_pushnumber(L, cp_now() + timeout);
    return flush_loop(L, 0);
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

/* core.testing.send_raw(m, bytes): queue raw bytes as if they were frames
 * (malformed input tests); upvalue 1 is the metatable, as for methods. */
static int l_send_raw(lua_State *L)
{
    cp_messenger *m = self_open(L);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (m->state != CP_M_OPEN) return raise_down(L, m);
    if (cp_messenger_send_raw(m, s, n)) return luaL_error(L, "out of memory");
    return 0;
}

/* core.testing.queue_stats(m) -> {queued, queued_max, pump_bytes}: the
 * messages queued now, the most ever queued at once (what the bound on one
 * pump's reading keeps small in a stream), and that bound (CP_PUMP_BYTES). */
static int l_queue_stats(lua_State *L)
{
    cp_messenger *m = self_open(L);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)m->queued);
    lua_setfield(L, -2, "queued");
    lua_pushinteger(L, (lua_Integer)m->queued_max);
    lua_setfield(L, -2, "queued_max");
    lua_pushinteger(L, (lua_Integer)CP_PUMP_BYTES);
    lua_setfield(L, -2, "pump_bytes");
    return 1;
}

/* core.testing.big_kept(m [, keep]) -> bytes of the block m keeps for its
 * next large frame; keep sets the largest block it may keep (messenger.h). */
static int l_big_kept(lua_State *L)
{
    cp_messenger *m = self_open(L);
    if (!lua_isnoneornil(L, 2)) {
        lua_Integer keep = luaL_checkinteger(L, 2);
        luaL_argcheck(L, keep >= 0, 2, "must be >= 0");
        m->big_keep = (size_t)keep;
    }
    lua_pushinteger(L, (lua_Integer)cp_messenger_big_kept(m));
    return 1;
}

/* coproc.wait(messengers, timeout) -> list of the ready ones. In a
 * coroutine with a waiter it waits there. Stack: 1 the list, 2 the
 * timeout, 3 the deadline (nil: none), 4 the messenger array. */
static int wait_k(lua_State *L, int status, lua_KContext ctx);

static int wait_loop(lua_State *L, int noyield)
{
    lua_settop(L, 3);
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
    double left = -1;
    if (!lua_isnil(L, 3)) {
        left = lua_tonumber(L, 3) - cp_now();
        if (left < 0) left = 0;
    }
    int rc = -2;
    if (!noyield && left != 0 && lua_isyieldable(L)) {
        rc = cp_messenger_wait_many(ms, (int)n, ready, 0);
        raise_wait(L, rc);
        if (rc == 0 && cp_l_waiter_push(L)) {
            cp_l_push_request(L, 0, 0, 0, 1, left);
            lua_callk(L, 1, 1, 0, wait_k);
            return wait_k(L, LUA_OK, 0);
        }
    }
    if (rc <= 0) rc = cp_messenger_wait_many(ms, (int)n, ready, left);
    raise_wait(L, rc);
    lua_newtable(L);
    if (rc > 0) {
        lua_Integer k = 0;
        for (lua_Integer i = 1; i <= n; i++)
            if (ready[i - 1]) { lua_geti(L, 1, i); lua_rawseti(L, -2, ++k); }
    }
    return 1;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status; (void)ctx;
    return wait_loop(L, !lua_toboolean(L, -1));
}

static int l_wait(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = opt_timeout(L, 2);
    if (lua_rawlen(L, 1) == 0) {
        /* Nothing to wait for can ever be ready: say so now, not never. */
        lua_newtable(L);
        return 1;
    }
    lua_settop(L, 2);
    if (timeout < 0) lua_pushnil(L);
    else lua_pushnumber(L, cp_now() + timeout);
    return wait_loop(L, 0);
}

/* core.messenger_pair(arrival_order) -> a, b: two connected messengers of
 * this process (Messenger.new_pair in Lua). */
static int l_messenger_pair(lua_State *L)
{
    int arrival = lua_toboolean(L, 1);
    l_messenger *a = cp_l_messenger_push(L);
    l_messenger *b = cp_l_messenger_push(L);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return cp_l_oserror(L, errno, "socketpair", "cannot make a messenger pair");
    if (cp_messenger_open(&a->m, sv[0], arrival, NULL)) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return cp_l_oserror(L, e, "fcntl", "cannot make a messenger pair");
    }
    if (cp_messenger_open(&b->m, sv[1], arrival, NULL)) {
        int e = errno;
        close(sv[1]);
        cp_messenger_close(&a->m);
        return cp_l_oserror(L, e, "fcntl", "cannot make a messenger pair");
    }
    return 2;
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
    {"receive_message_blocking", l_receive_message_blocking},
    {"try_receive", l_try_receive},
    {"receive_raw", l_receive_raw},
    {"receive_available", l_receive_available},
    {"receive_available_messages", l_receive_available_messages},
    {"receive_remaining", l_receive_remaining},
    {"receive_remaining_messages", l_receive_remaining_messages},
    {"available", l_available},
    {"pending", l_pending},
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
    {"pollfd", l_fileno},
    {"events", l_events},
    {"timeout", l_timeout},
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
    /* Test hooks, not API: core.testing.send_raw(m, bytes) writes bytes as
     * they are (malformed frames for the fault specs); queue_stats(m) says
     * how many messages were queued at most. */
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, t, "testing");
    luaL_getmetatable(L, CP_MESSENGER_MT);
    lua_pushcclosure(L, l_send_raw, 1);
    lua_setfield(L, -2, "send_raw");
    luaL_getmetatable(L, CP_MESSENGER_MT);
    lua_pushcclosure(L, l_queue_stats, 1);
    lua_setfield(L, -2, "queue_stats");
    luaL_getmetatable(L, CP_MESSENGER_MT);
    lua_pushcclosure(L, l_big_kept, 1);
    lua_setfield(L, -2, "big_kept");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_messenger_pair);
    lua_setfield(L, t, "messenger_pair");
    lua_pushcfunction(L, l_on_close);
    lua_setfield(L, t, "on_close");
}
