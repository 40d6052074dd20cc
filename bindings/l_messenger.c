/* l_messenger.c: coproc.Messenger, one end of a worker connection.
 *
 * Misuse (bad argument types) raises Lua argument errors; runtime failures
 * raise coproc error objects (Timeout, WorkerDied, WorkerError, EncodeError,
 * ProtocolError, ResourceRequestedClose). */
#include "lcore.h"
#include "lmessenger.h"
#include "codec.h"
#include "loop.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/socket.h>
#include <poll.h>
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

static l_messenger *check(lua_State *L, int i)
{
    return luaL_checkudata(L, i, CP_MESSENGER_MT);
}

/* Hot-path check for methods registered with the metatable as upvalue 1:
 * one pointer comparison instead of a registry lookup by name. */
static l_messenger *check_hot(lua_State *L, int i)
{
    l_messenger *lm = lua_touserdata(L, i);
    if (lm && lua_getmetatable(L, i)) {
        int ok = lua_rawequal(L, -1, lua_upvalueindex(1));
        lua_pop(L, 1);
        if (ok) {
            if (lm->m.state == CP_M_CLOSED) luaL_error(L, "attempt to use a closed messenger");
            return lm;
        }
    }
    return luaL_checkudata(L, i, CP_MESSENGER_MT);
}

/* A messenger that can still be used for receiving (queued messages of a
 * dead peer remain readable). */
static cp_messenger *check_usable(lua_State *L, int i)
{
    l_messenger *lm = check(L, i);
    if (lm->m.state == CP_M_CLOSED) luaL_error(L, "attempt to use a closed messenger");
    return &lm->m;
}

void cp_l_messenger_drain(l_messenger *lm, double timeout)
{
    if (lm->m.state == CP_M_OPEN) cp_messenger_flush(&lm->m, timeout);
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

/* Explicit priority, else data.priority for a table payload, else +inf. */
static double get_priority(lua_State *L, int data, int i)
{
    double p = INFINITY;
    if (!lua_isnoneornil(L, i)) p = luaL_checknumber(L, i);
    else if (lua_type(L, data) == LUA_TTABLE) {
        lua_pushvalue(L, lua_upvalueindex(2)); /* "priority", interned once */
        lua_gettable(L, data);
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
    uint64_t n = 0;
    for (int b = 0; b < CP_CHAN_BUCKETS; b++)
        for (const cp_chan *c = m->buckets[b]; c; c = c->next)
            if (c->requests_sent > c->replies_received) n += c->requests_sent - c->replies_received;
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
    int exited = cp_proc_wait(p, 2.0);
    int code = cp_proc_exitcode(p);
    int unanswered = sum_remaining(m);
    if (!exited)
        cp_l_pusherror(L, "WorkerDied", "worker %d closed its connection (%d request(s) unanswered)", (int)p->pid, unanswered);
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

static void raise_wait(lua_State *L, int rc)
{
    if (rc == -1) luaL_error(L, "interrupted!");
}

/* ---- sending ---- */

/* A burst of small sends leaves its tail in the outbound buffer until the
 * next coproc call. So that a worker that sends and then computes for a
 * long time does not hold its last messages back, a send that leaves bytes
 * pending arms a count hook: after FLUSH_HOOK_COUNT more VM instructions
 * everything pending is written and the hook removes itself. A hook the
 * program set itself (a debugger, a profiler) is never replaced. */
#define FLUSH_HOOK_COUNT 20000

static void flush_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    cp_messenger_flush_all();
}

static void arm_flush_hook(lua_State *L, cp_messenger *m)
{
    if (cp_buf_size(&m->out) == 0 || ev_is_active(&m->ww)) return; /* nothing held, or the loop drains it */
    lua_Hook h = lua_gethook(L);
    if (h == NULL) lua_sethook(L, flush_hook, LUA_MASKCOUNT, FLUSH_HOOK_COUNT);
}

/* A slice to send as one array: head[1..#head], list[lo..hi]. */
typedef struct slice { int list; lua_Integer lo, hi; } slice;

static void send_frame(lua_State *L, cp_messenger *m, int kind, int data, const slice *sl,
                       cp_chan *c, const chankey *k, double prio, unsigned flags)
{
    if (m->state != CP_M_OPEN) raise_down(L, m);
    size_t mark = cp_frame_begin(&m->out, kind, k->b, k->n, prio, flags);
    if (mark == (size_t)-1) luaL_error(L, "out of memory");
    char err[CP_CODEC_ERRLEN];
    int rc = sl ? cp_codec_encode_slice(L, data, sl->list, sl->lo, sl->hi, &m->out, err, sizeof err)
                : cp_codec_encode(L, data, &m->out, err, sizeof err);
    if (rc) {
        cp_buf_truncate(&m->out, mark);
        cp_l_error(L, "EncodeError", "cannot send: %s", err);
    }
    size_t size = m->out.len - mark;
    if (cp_frame_finish(&m->out, mark, m->max_frame))
        cp_l_error(L, "EncodeError", "cannot send: message of %d bytes exceeds the maximum frame size of %d bytes",
                   (int)(size > INT_MAX ? INT_MAX : size), (int)(m->max_frame > INT_MAX ? INT_MAX : m->max_frame));
    if (cp_messenger_sent(m, c, flags)) raise_down(L, m);
    arm_flush_hook(L, m);
}

static void send_one(lua_State *L, cp_messenger *m, int kind, int data, cp_chan *c,
                     const chankey *k, double prio, unsigned flags)
{
    send_frame(L, m, kind, data, NULL, c, k, prio, flags);
}

static int send_with(lua_State *L, unsigned flags)
{
    cp_messenger *m = &check_hot(L, 1)->m;
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
    cp_messenger *m = check_usable(L, 1);
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
 * the two tables (a pool batch without building a table per batch). */
static int l_send_request_slice(lua_State *L)
{
    cp_messenger *m = check_usable(L, 1);
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
    send_frame(L, m, CP_KIND_DATA, 2, &sl, c, &k, prio, CP_FLAG_REQUEST);
    return 0;
}

static int l_send_close_request(lua_State *L)
{
    cp_messenger *m = check_usable(L, 1);
    chankey k;
    k.n = cp_channel_nil(k.b);
    lua_pushnil(L);
    send_one(L, m, CP_KIND_CLOSE, lua_gettop(L), NULL, &k, 0, 0);
    cp_messenger_flush_nb(m);
    return 0;
}

static int l_send_error(lua_State *L)
{
    cp_messenger *m = check_usable(L, 1);
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
    cp_messenger *m = &check_hot(L, 1)->m;
    cp_chan *c = get_chan(L, m, 2, 1);
    double timeout = opt_timeout(L, 3);
    for (;;) {
        if (try_receive(L, m, c)) return 1;
        if (cp_messenger_exhausted(m, c)) return raise_down(L, m);
        int rc = cp_messenger_wait(m, c, 0, timeout);
        if (rc == 0) {
            if (try_receive(L, m, c)) return 1;
            return cp_l_error(L, "Timeout", "no message within %f seconds", timeout);
        }
        raise_wait(L, rc);
    }
}

static int l_receive_available(lua_State *L)
{
    cp_messenger *m = check_usable(L, 1);
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
    cp_messenger *m = check_usable(L, lua_upvalueindex(1));
    lua_pushvalue(L, lua_upvalueindex(2));
    cp_chan *c = get_chan(L, m, lua_gettop(L), 1);
    if (c->requests_sent <= c->replies_received) return 0;
    for (;;) {
        if (try_receive(L, m, c)) return 1;
        if (cp_messenger_exhausted(m, c)) return raise_down(L, m);
        raise_wait(L, cp_messenger_wait(m, c, 0, -1));
    }
}

static int l_receive_remaining(lua_State *L)
{
    check_usable(L, 1);
    lua_settop(L, 2);
    lua_pushcclosure(L, remaining_iter, 2);
    return 1;
}

static int l_available(lua_State *L)
{
    cp_messenger *m = check_usable(L, 1);
    cp_chan *c = get_chan(L, m, 2, 0);
    cp_messenger_flush_all();
    if (m->state == CP_M_OPEN) cp_messenger_pump(m);
    lua_pushboolean(L, m->special.n || (c && c->q.n));
    return 1;
}

static int l_await_available(lua_State *L)
{
    cp_messenger *m = check_usable(L, 1);
    double timeout = opt_timeout(L, 2);
    int rc = cp_messenger_wait(m, NULL, 1, timeout);
    raise_wait(L, rc);
    lua_pushboolean(L, m->queued > 0);
    return 1;
}

static int l_pipe_poll(lua_State *L)
{
    cp_messenger *m = check_usable(L, 1);
    double timeout = opt_timeout(L, 2);
    cp_messenger_flush_all();
    if (m->state != CP_M_OPEN) { lua_pushboolean(L, 0); return 1; }
    struct pollfd pfd = {m->fd, POLLIN, 0};
    int r = poll(&pfd, 1, timeout < 0 ? -1 : (int)(timeout * 1000));
    lua_pushboolean(L, r > 0);
    return 1;
}

/* ---- counters ---- */

static int counter(lua_State *L, int which)
{
    cp_messenger *m = &check(L, 1)->m;
    cp_chan *c = get_chan(L, m, 2, 0);
    uint64_t v = 0;
    if (c) switch (which) {
        case 0: v = c->requests_sent > c->replies_received ? c->requests_sent - c->replies_received : 0; break;
        case 1: v = c->requests_sent; break;
        case 2: v = c->replies_received; break;
        case 3: v = c->q.n; break;
        case 4: v = c->requests_received; break;
        case 5: v = c->replies_sent; break;
    }
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

static int l_remaining(lua_State *L) { return counter(L, 0); }
static int l_requests_sent(lua_State *L) { return counter(L, 1); }
static int l_replies_received(lua_State *L) { return counter(L, 2); }
static int l_requests_received(lua_State *L) { return counter(L, 4); }
static int l_replies_sent(lua_State *L) { return counter(L, 5); }

static int l_queue_size(lua_State *L)
{
    cp_messenger *m = &check(L, 1)->m;
    if (lua_isnoneornil(L, 2) && lua_gettop(L) < 2) {
        lua_pushinteger(L, (lua_Integer)m->queued);
        return 1;
    }
    return counter(L, 3);
}

static int l_messages_sent(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check(L, 1)->m.messages_sent);
    return 1;
}

static int l_messages_received(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check(L, 1)->m.messages_received);
    return 1;
}

/* ---- plumbing ---- */

static int l_flush(lua_State *L)
{
    cp_messenger *m = check_usable(L, 1);
    double timeout = opt_timeout(L, 2);
    int rc = cp_messenger_flush(m, timeout);
    if (rc == -2) return raise_down(L, m);
    raise_wait(L, rc);
    lua_pushboolean(L, rc == 1);
    return 1;
}

static int l_fileno(lua_State *L)
{
    lua_pushinteger(L, check(L, 1)->m.fd);
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
    cp_messenger *m = &check(L, 1)->m;
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 64 && n <= (lua_Integer)UINT32_MAX, 2, "maximum frame size must be 64 .. 2^32-1 bytes");
    m->max_frame = (size_t)n;
    return 0;
}

/* trust: m:set_trust("code"|"data"), m:trust(): what a decode of a received
 * payload accepts (codec.h, docs/protocol.md "Trust"). */
static int l_set_trust(lua_State *L)
{
    l_messenger *lm = check(L, 1);
    luaL_checkany(L, 2);
    lm->trust = (int)cp_l_checktrust(L, 2);
    return 0;
}

static int l_trust(lua_State *L)
{
    lua_pushstring(L, cp_l_trustname((cp_trust)check(L, 1)->trust));
    return 1;
}

/* Test hook: queue raw bytes as if they were frames (malformed input tests). */
static int l_send_raw(lua_State *L)
{
    cp_messenger *m = check_usable(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (m->state != CP_M_OPEN) return raise_down(L, m);
    if (cp_buf_append(&m->out, s, n)) return luaL_error(L, "out of memory");
    cp_messenger_flush_nb(m);
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
    {"send_close_request", l_send_close_request},
    {"send_error", l_send_error},
    {"receive_blocking", l_receive_blocking},
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

void cp_l_messenger_open(lua_State *L, int t)
{
    if (luaL_newmetatable(L, CP_MESSENGER_MT)) {
        luaL_setfuncs(L, meta, 0);
        /* Methods get upvalues: 1 the metatable (fast self check), 2 the
         * interned key "priority". */
        luaL_newlibtable(L, methods);
        lua_pushvalue(L, -2);
        lua_pushliteral(L, "priority");
        luaL_setfuncs(L, methods, 2);
        lua_setfield(L, -2, "__index");
    }
    lua_getfield(L, -1, "__index");
    lua_setfield(L, t, "Messenger");   /* method table, for extension in Lua */
    lua_pop(L, 1);
    lua_pushcfunction(L, l_wait);
    lua_setfield(L, t, "wait");
}
