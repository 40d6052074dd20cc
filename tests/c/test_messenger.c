/* test_messenger.c: two messengers joined by a socketpair in one process:
 * priorities across the wire, counters, large values both ways at once (no
 * deadlock), malformed input, EOF with queued messages kept; the limits:
 * room before a send, counting only written frames, large-frame buffers
 * that grow with what arrived, the bound on queued bytes, the exit drain;
 * the process-wide arrivals count. */
#include "check.h"
#include "messenger_pair.h"
#include "loop.h"
#include "messenger.h"

#include <fcntl.h>
#include <poll.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Send a frame whose payload is a msgpack bin of n bytes of fill. */
static void send_bin(cp_messenger *m, double prio, unsigned flags, size_t n, char fill)
{
    char ch[16];
    size_t cl = cp_channel_nil(ch);
    cp_chan *c = cp_messenger_chan(m, ch, cl, 1);
    size_t mark = cp_frame_begin(&m->out, CP_KIND_DATA, ch, cl, prio, flags);
    unsigned char hdr[5] = {0xc6, (unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n};
    cp_buf_append(&m->out, hdr, 5);
    cp_buf_reserve(&m->out, n);
    memset(m->out.data + m->out.len, fill, n);
    m->out.len += n;
    CHECK(cp_frame_finish(&m->out, mark, m->max_frame) == 0);
    CHECK(cp_messenger_sent(m, c, flags) == 0);
}

struct until { cp_messenger *m; cp_chan *c; size_t n; };

static int until_ready(void *ud)
{
    struct until *u = ud;
    return (u->c && u->c->q.n >= u->n) || u->m->state != CP_M_OPEN;
}

/* Run the loop until channel c holds n messages or the connection is down. */
static void wait_for(cp_messenger *m, cp_chan *c, size_t n)
{
    cp_messenger_flush_all();
    struct until u = {m, c, n};
    CHECK(cp_loop_wait(until_ready, &u, 10.0) == 1);
}

static cp_chan *nil_chan(cp_messenger *m)
{
    char ch[16];
    size_t cl = cp_channel_nil(ch);
    return cp_messenger_chan(m, ch, cl, 1);
}

static void test_priorities_and_counters(void)
{
    cp_messenger a, b;
    pair(&a, &b);
    send_bin(&a, INFINITY, CP_FLAG_REQUEST, 1, 'x');
    send_bin(&a, 3, CP_FLAG_REQUEST, 1, 'c');
    send_bin(&a, 1, CP_FLAG_REQUEST, 1, 'a');
    send_bin(&a, 3, CP_FLAG_REQUEST, 1, 'd');
    cp_chan *cb = nil_chan(&b);
    /* Wait until all four are queued on b (the last may still be corked). */
    wait_for(&b, cb, 4);
    CHECK(cb->q.n == 4);
    const char want[] = "acdx";
    for (int i = 0; i < 4; i++) {
        cp_msg *m = cp_messenger_pop(&b, cb);
        CHECK(m && m->len == 6 && m->data[5] == want[i]);
        cp_msg_free(m);
    }
    cp_chan *ca = nil_chan(&a);
    CHECK(ca->requests_sent == 4);
    CHECK(cb->requests_received == 4);
    /* Replies count on the requesting side. */
    send_bin(&b, INFINITY, CP_FLAG_REPLY, 1, 'r');
    CHECK(cp_messenger_wait(&a, ca, 0, 5.0) == 1);
    cp_msg *r = cp_messenger_pop(&a, ca);
    CHECK(r != NULL);
    cp_msg_free(r);
    CHECK(ca->replies_received == 1);
    CHECK(a.messages_sent == 4 && b.messages_received == 4);
    cp_messenger_close(&a);
    cp_messenger_close(&b);
    cp_messenger_close(&a); /* closing twice is harmless */
}

/* The process-wide count of queued messages grows with every message a
 * wait queues, whichever messenger the wait was for: how a foreign loop's
 * adapter learns that a socket it polls went quiet with a message queued. */
static void test_arrivals(void)
{
    cp_messenger a, b, c, d;
    pair(&a, &b);
    pair(&c, &d);
    uint64_t before = cp_messenger_arrivals();
    send_bin(&a, INFINITY, 0, 1, 'x');
    send_bin(&c, INFINITY, 0, 1, 'y');
    cp_messenger_flush_all();
    /* a wait for b reads d's message too */
    wait_for(&b, nil_chan(&b), 1);
    cp_messenger_wait(&b, nil_chan(&b), 0, 0);
    CHECK(nil_chan(&d)->q.n == 1);
    CHECK(cp_messenger_arrivals() - before == 2);
    cp_messenger_close(&a);
    cp_messenger_close(&b);
    cp_messenger_close(&c);
    cp_messenger_close(&d);
}

static void test_large_both_ways(void)
{
    /* 32 MiB each way, more than both socket buffers: only works if a
     * waiting side keeps reading while its own output drains. */
    cp_messenger a, b;
    pair(&a, &b);
    size_t n = 32u << 20;
    send_bin(&a, INFINITY, 0, n, 'A');
    send_bin(&b, INFINITY, 0, n, 'B');
    cp_chan *ca = nil_chan(&a), *cb = nil_chan(&b);
    CHECK(cp_messenger_wait(&a, ca, 0, 120.0) == 1);
    CHECK(cp_messenger_wait(&b, cb, 0, 120.0) == 1);
    cp_msg *ma = cp_messenger_pop(&a, ca), *mb = cp_messenger_pop(&b, cb);
    CHECK(ma && ma->len == n + 5 && ma->data[5] == 'B' && ma->data[n + 4] == 'B');
    CHECK(mb && mb->len == n + 5 && mb->data[5] == 'A' && mb->data[n + 4] == 'A');
    cp_msg_free(ma);
    cp_msg_free(mb);
    cp_messenger_close(&a);
    cp_messenger_close(&b);
}

static void test_malformed_breaks_connection(void)
{
    cp_messenger a, b;
    pair(&a, &b);
    send_bin(&a, INFINITY, 0, 3, 'k');       /* one good frame first */
    cp_messenger_flush(&a, 5.0);
    CHECK(write(a.fd, "\x00\x00\x00\x06\x95\x09\xc0\xc0\x00\x2a", 10) == 10); /* unknown kind */
    cp_chan *cb = nil_chan(&b);
    wait_for(&b, NULL, 0);
    CHECK(b.state == CP_M_BROKEN);
    CHECK(b.error && strstr(b.error, "kind"));
    CHECK(cb->q.n == 1);                 /* the good frame is not lost */
    CHECK(!cp_messenger_exhausted(&b, cb));
    cp_msg *m = cp_messenger_pop(&b, cb);
    CHECK(m != NULL);
    cp_msg_free(m);
    CHECK(cp_messenger_exhausted(&b, cb));
    cp_messenger_close(&a);
    cp_messenger_close(&b);
}

static void test_oversized_and_eof(void)
{
    cp_messenger a, b;
    pair(&a, &b);
    b.max_frame = 1024;
    send_bin(&a, INFINITY, 0, 10, 'o');
    send_bin(&a, INFINITY, 0, 4096, 'o'); /* exceeds b's limit */
    cp_chan *cb = nil_chan(&b);
    wait_for(&b, NULL, 0);
    CHECK(b.state == CP_M_BROKEN && strstr(b.error, "maximum"));
    CHECK(cb->q.n == 1);
    cp_messenger_close(&b);

    /* EOF: queued messages stay readable after the peer is gone. */
    cp_messenger c, d;
    pair(&c, &d);
    send_bin(&c, INFINITY, CP_FLAG_REQUEST, 5, 'e');
    cp_messenger_flush(&c, 5.0);
    cp_messenger_close(&c);
    cp_chan *cd = nil_chan(&d);
    wait_for(&d, NULL, 0);
    CHECK(d.state == CP_M_EOF);
    CHECK(cp_messenger_ready(&d, cd));
    cp_msg *m = cp_messenger_pop(&d, cd);
    CHECK(m && m->len == 10);
    cp_msg_free(m);
    CHECK(cp_messenger_exhausted(&d, cd));
    cp_messenger_close(&d);
    cp_messenger_close(&a);
}

static void test_timeout(void)
{
    cp_messenger a, b;
    pair(&a, &b);
    double t0 = cp_now();
    CHECK(cp_messenger_wait(&a, nil_chan(&a), 0, 0.05) == 0);
    CHECK(cp_now() - t0 >= 0.04);
    cp_messenger_close(&a);
    cp_messenger_close(&b);
}

/* A messenger whose peer is a bare fd that nobody reads. */
static int half_pair(cp_messenger *a)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    cp_messenger_init(a);
    CHECK(cp_messenger_open(a, sv[0], 0, NULL) == 0);
    return sv[1];
}

static void test_room_and_counting(void)
{
    cp_messenger a;
    int peer = half_pair(&a);
    cp_chan *ca = nil_chan(&a);
    /* Fill past the high-water mark: the peer never reads. */
    while (cp_messenger_unsent(&a) <= CP_HIGH_WATER) {
        CHECK(cp_messenger_room(&a, 0) == 1);
        send_bin(&a, INFINITY, CP_FLAG_REQUEST, 1u << 20, 'r');
    }
    uint64_t sent = ca->requests_sent;
    double t0 = cp_now();
    CHECK(cp_messenger_room(&a, 0.1) == 0);          /* times out: no room */
    CHECK(cp_now() - t0 >= 0.09);
    CHECK(cp_messenger_unsent(&a) > CP_HIGH_WATER);
    /* The peer goes away: room reports the connection down... */
    close(peer);
    CHECK(cp_messenger_room(&a, 1.0) == CP_WAIT_DOWN);
    CHECK(ca->requests_sent == sent);
    cp_messenger_close(&a);

    /* ...and a frame whose write fails is not counted. */
    cp_messenger b;
    peer = half_pair(&b);
    close(peer);
    cp_chan *cb = nil_chan(&b);
    size_t mark = cp_frame_begin(&b.out, CP_KIND_DATA, "\xc0", 1, INFINITY, CP_FLAG_REQUEST);
    cp_buf_append(&b.out, "\xc0", 1);
    CHECK(cp_frame_finish(&b.out, mark, b.max_frame) == 0);
    CHECK(cp_messenger_sent(&b, cb, CP_FLAG_REQUEST) == -1);
    CHECK(cb->requests_sent == 0 && b.messages_sent == 0);
    cp_messenger_close(&b);
}

static void test_big_frame_grows(void)
{
    cp_messenger b;
    int peer = half_pair(&b);
    fcntl(peer, F_SETFL, fcntl(peer, F_GETFL) | O_NONBLOCK);
    /* A header declaring 500 MiB, then 10 bytes. */
    const unsigned char hdr[14] = {0x1f, 0x40, 0, 0, 0x95, 0, 0xc0, 0xc0, 0, 0xc6, 0x1f, 0x3f, 0xff, 0xf0};
    CHECK(write(peer, hdr, sizeof hdr) == (ssize_t)sizeof hdr);
    cp_messenger_pump(&b);
    CHECK(b.big != NULL && b.big_have == sizeof hdr);
    CHECK(b.big_total == 4 + (500u << 20));
    CHECK(b.big_cap <= CP_BIG_STEP);
    /* More bytes: the block grows, never past twice what has arrived. */
    char *chunk = calloc(1, 1u << 20);
    size_t have = sizeof hdr;
    for (int i = 0; i < 5; i++) {
        size_t off = 0;
        while (off < (1u << 20)) {
            ssize_t n = write(peer, chunk + off, (1u << 20) - off);
            if (n > 0) off += (size_t)n;
            cp_messenger_pump(&b);
            CHECK(b.big_cap <= 2 * b.big_have || b.big_cap == CP_BIG_STEP);
        }
        have += 1u << 20;
    }
    cp_messenger_pump(&b);
    CHECK(b.big_have == have);
    CHECK(b.big_cap <= 2 * b.big_have);
    free(chunk);
    close(peer);
    cp_messenger_close(&b);

    /* A real 3 MiB frame still arrives whole. */
    cp_messenger c, d;
    pair(&c, &d);
    send_bin(&c, INFINITY, 0, 3u << 20, 'G');
    cp_chan *cd = nil_chan(&d);
    wait_for(&d, cd, 1);
    cp_msg *m = cp_messenger_pop(&d, cd);
    CHECK(m && m->len == (3u << 20) + 5 && m->data[5] == 'G' && m->data[m->len - 1] == 'G');
    cp_msg_free(m);
    cp_messenger_close(&c);
    cp_messenger_close(&d);
}

static int is_held(void *ud) { return cp_messenger_held(ud); }

static void test_bound_holds_reading(void)
{
    cp_messenger a, b;
    pair(&a, &b);
    cp_messenger_set_max_queued(&b, 64u << 10);
    /* 20000 small frames: far more than the bound once queued. */
    for (int i = 0; i < 20000; i++) send_bin(&a, INFINITY, 0, 1, (char)('a' + i % 26));
    cp_messenger_flush_all();
    CHECK(cp_loop_wait(is_held, &b, 10.0) == 1);
    cp_chan *cb = nil_chan(&b);
    /* Over by at most one message, however much the socket holds. */
    CHECK(b.queued_bytes > b.max_queued);
    CHECK(b.queued_bytes <= b.max_queued + cp_msg_footprint(6) + CP_MSG_OVERHEAD);
    CHECK(cb->bytes == b.queued_bytes);
    CHECK(cp_messenger_fullest(&b) == cb);
    CHECK(cp_messenger_ready(&b, NULL));    /* a wait for another channel ends */
    size_t held_n = cb->q.n;
    /* Running the loop reads no further. */
    struct until u = {&b, cb, held_n + 1};
    cp_messenger_flush_all();
    CHECK(cp_loop_wait(until_ready, &u, 0.05) == 0);
    CHECK(cb->q.n == held_n);
    /* Reading lets everything through, in order, within the bound. */
    size_t most = 0;
    for (int i = 0; i < 20000; i++) {
        if (!cb->q.n) wait_for(&b, cb, 1);
        cp_msg *m = cp_messenger_pop(&b, cb);
        CHECK(m && m->len == 6 && m->data[5] == (char)('a' + i % 26));
        cp_msg_free(m);
        if (b.queued_bytes > most) most = b.queued_bytes;
    }
    CHECK(most <= b.max_queued + cp_msg_footprint(6) + CP_MSG_OVERHEAD);
    CHECK(b.queued_bytes == 0 && cb->bytes == 0);
    /* Lifting the bound. */
    cp_messenger_set_max_queued(&b, SIZE_MAX);
    CHECK(!cp_messenger_held(&b));
    cp_messenger_close(&a);
    cp_messenger_close(&b);
}

static void test_drain_discards_input(void)
{
    /* At exit, a messenger writes what is pending while the peer floods it:
     * what arrives is dropped, not queued. */
    cp_messenger a, b;
    pair(&a, &b);
    for (int i = 0; i < 2000; i++) send_bin(&b, INFINITY, 0, 100, 'f');
    send_bin(&a, INFINITY, 0, 10u << 20, 'x');
    cp_messenger_flush_all();
    CHECK(cp_messenger_drain(&a, 10.0) == 1);
    CHECK(a.queued == 0);
    cp_chan *cb = nil_chan(&b);
    wait_for(&b, cb, 1);
    cp_messenger_close(&a);
    cp_messenger_close(&b);
}

/* Frames of a 4-byte bin payload holding i, priority i % 3 (or +inf with
 * prio 0), for i in [from, to), appended to out. */
static void seq_frames(cp_buf *out, uint32_t from, uint32_t to, int prio)
{
    for (uint32_t i = from; i < to; i++) {
        size_t mark = cp_frame_begin(out, CP_KIND_DATA, "\xc0", 1, prio ? (double)(i % 3) : INFINITY, 0);
        unsigned char p[6] = {0xc4, 4, (unsigned char)(i >> 24), (unsigned char)(i >> 16), (unsigned char)(i >> 8), (unsigned char)i};
        cp_buf_append(out, p, 6);
        CHECK(cp_frame_finish(out, mark, CP_FRAME_MAX_DEFAULT) == 0);
    }
}

static uint32_t seq_of(const cp_msg *m)
{
    const unsigned char *p = (const unsigned char *)m->data;
    return (uint32_t)p[2] << 24 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 8 | p[5];
}

/* Write all of buf to fd (non-blocking) as far as the socket takes it:
 * returns the bytes written. */
static size_t write_some(int fd, const cp_buf *buf)
{
    size_t off = 0;
    while (off < cp_buf_size(buf)) {
        size_t n = cp_buf_size(buf) - off;
        ssize_t w = write(fd, cp_buf_head(buf) + off, n > 65536 ? 65536 : n);
        if (w <= 0) break;
        off += (size_t)w;
    }
    return off;
}

static int readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1;
}

/* One pump queues at most about CP_PUMP_BYTES of small frames however many
 * the socket holds; the rest stays there, the socket still readable, and
 * later pumps take it: nothing lost or doubled, each priority in order,
 * every pump's batch in (priority, arrival) order. Then the end of input
 * after frames left in the socket: EOF only once they are all queued; a
 * malformed frame behind them breaks the connection only after them. */
static void test_pump_bounded(void)
{
    for (int ending = 0; ending < 3; ending++) { /* 0 none, 1 EOF, 2 a bad frame */
        cp_messenger b;
        int peer = half_pair(&b);
        int sz = 4 << 20;
        setsockopt(peer, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        setsockopt(b.fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        fcntl(peer, F_SETFL, fcntl(peer, F_GETFL) | O_NONBLOCK);
        cp_buf out = CP_BUF_INIT;
        const uint32_t total = (2u << 20) / 23; /* 23-byte frames: 2 MiB */
        seq_frames(&out, 0, total, 1);
        size_t frame = cp_buf_size(&out) / total;
        CHECK(frame == 23 && cp_buf_size(&out) == frame * total);
        size_t sent = write_some(peer, &out);
        sent -= sent % frame;
        uint32_t n = (uint32_t)(sent / frame);
        CHECK(sent > 2 * CP_PUMP_BYTES); /* the socket holds more than a pump takes */
        if (ending == 1) shutdown(peer, SHUT_WR);
        if (ending == 2) CHECK(write(peer, "\0\0\0\3\x93\x09\x09", 7) == 7); /* kind 9: unknown */
        cp_chan *cb = nil_chan(&b);
        uint32_t seen = 0, last[3] = {0, 0, 0};
        int first[3] = {1, 1, 1}, pumps = 0;
        while (seen < n) {
            cp_messenger_pump(&b);
            pumps++;
            /* A pump takes at most its bound and one read beyond. */
            CHECK(cb->q.n * frame <= CP_PUMP_BYTES + (128u << 10));
            CHECK(cb->q.n > 0);
            if (seen + cb->q.n < n) {
                CHECK(b.state == CP_M_OPEN);
                CHECK(readable(b.fd));
            }
            double lp = -1;
            uint32_t ls = 0;
            cp_msg *m;
            while ((m = cp_messenger_pop(&b, cb))) {
                uint32_t i = seq_of(m);
                int k = (int)(i % 3);
                CHECK(m->priority == (double)k);
                CHECK(first[k] || i > last[k]);
                CHECK(m->priority > lp || (m->priority == lp && i > ls));
                first[k] = 0;
                last[k] = i;
                lp = m->priority;
                ls = i;
                seen++;
                cp_msg_free(m);
            }
            if (pumps > 1000) break;
        }
        CHECK(seen == n);
        CHECK(pumps > 2);
        CHECK(b.queued_max * frame <= CP_PUMP_BYTES + (128u << 10));
        cp_messenger_pump(&b);
        if (ending == 0) CHECK(b.state == CP_M_OPEN && !readable(b.fd));
        if (ending == 1) CHECK(b.state == CP_M_EOF);
        if (ending == 2) CHECK(b.state == CP_M_BROKEN && b.error != NULL);
        CHECK(cb->q.n == 0);
        cp_buf_free(&out);
        close(peer);
        cp_messenger_close(&b);
    }
}

int main(void)
{
    test_priorities_and_counters();
    test_arrivals();
    test_large_both_ways();
    test_malformed_breaks_connection();
    test_oversized_and_eof();
    test_timeout();
    test_room_and_counting();
    test_big_frame_grows();
    test_bound_holds_reading();
    test_drain_discards_input();
    test_pump_bounded();
    return check_report("test_messenger");
}
