/* test_forward.c: a relay between two connections (src/forward.h): a -> b,
 * b forwards to c, c -> d. Messages keep their channel, priority, flags and
 * bytes; CLOSE/ERROR go first and keep their kind; a slow far side stops
 * the relay at max_unsent; a dead far side is reported. */
#include "check.h"
#include "messenger_pair.h"
#include "forward.h"
#include "loop.h"
#include "messenger.h"

#include <math.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A frame on channel key whose payload is the msgpack str s. */
static void send_str(cp_messenger *m, int kind, const char *key, size_t kl, double prio, unsigned flags, const char *s)
{
    cp_chan *c = kind == CP_KIND_DATA ? cp_messenger_chan(m, key, kl, 1) : NULL;
    size_t mark, n = strlen(s);
    cp_buf *out = cp_messenger_begin(m, kind, key, kl, prio, flags, &mark);
    unsigned char h = (unsigned char)(0xa0 | n);
    cp_buf_append(out, &h, 1);
    cp_buf_append(out, s, n);
    CHECK(cp_messenger_commit(m, mark) == 0);
    CHECK(cp_messenger_sent(m, c, flags) == 0);
}

struct until { cp_messenger *m; size_t n; };
static int has_n(void *ud)
{
    struct until *u = ud;
    return cp_messenger_queued(u->m) >= u->n || u->m->state != CP_M_OPEN;
}

static void wait_n(cp_messenger *m, size_t n)
{
    cp_messenger_flush_all();
    struct until u = {m, n};
    CHECK(cp_loop_wait(has_n, &u, 10.0) == 1);
}

static int is_str(const cp_msg *m, const char *s)
{
    size_t n = strlen(s);
    return m && m->len == n + 1 && memcmp(m->data + 1, s, n) == 0;
}

static void test_relay_keeps_everything(void)
{
    cp_messenger a, b, c, d;
    pair(&a, &b);
    pair(&c, &d);
    char nil[1], jobs[8];
    size_t nl = cp_channel_nil(nil), jl = cp_channel_str(jobs, "jobs", 4);
    send_str(&a, CP_KIND_DATA, nil, nl, INFINITY, CP_FLAG_REQUEST, "late");
    send_str(&a, CP_KIND_DATA, nil, nl, 1, CP_FLAG_REQUEST, "soon");
    send_str(&a, CP_KIND_DATA, jobs, jl, 5, CP_FLAG_REPLY, "job");
    send_str(&a, CP_KIND_ERROR, nil, nl, 0, 0, "boom");
    wait_n(&b, 4);
    CHECK(cp_messenger_forward(&c, &b, 1 << 20) == 4);
    CHECK(cp_messenger_queued(&b) == 0);
    wait_n(&d, 4);
    cp_msg *e = cp_messenger_pop_special(&d);
    CHECK(e && e->kind == CP_KIND_ERROR && is_str(e, "boom"));
    cp_msg_free(e);
    cp_chan *dn = cp_messenger_chan(&d, nil, nl, 0), *dj = cp_messenger_chan(&d, jobs, jl, 0);
    CHECK(dn && dj);
    cp_msg *m1 = cp_messenger_pop(&d, dn), *m2 = cp_messenger_pop(&d, dn), *m3 = cp_messenger_pop(&d, dj);
    CHECK(is_str(m1, "soon") && m1->priority == 1 && (m1->flags & CP_FLAG_REQUEST));
    CHECK(is_str(m2, "late") && isinf(m2->priority));
    CHECK(is_str(m3, "job") && m3->priority == 5 && (m3->flags & CP_FLAG_REPLY));
    CHECK(dj->replies_received == 1 && dn->requests_received == 2);
    cp_chan *cj = cp_messenger_chan(&c, jobs, jl, 0);
    CHECK(cj && cj->replies_sent == 1);
    cp_msg_free(m1);
    cp_msg_free(m2);
    cp_msg_free(m3);
    /* Nothing queued: nothing moves. */
    CHECK(cp_messenger_forward(&c, &b, 1 << 20) == 0);
    cp_messenger_close(&a);
    cp_messenger_close(&b);
    cp_messenger_close(&c);
    cp_messenger_close(&d);
}

/* A frame whose payload is a msgpack bin of n bytes. */
static void send_bin(cp_messenger *m, size_t n)
{
    char nil[1];
    size_t nl = cp_channel_nil(nil);
    cp_chan *c = cp_messenger_chan(m, nil, nl, 1);
    size_t mark;
    cp_buf *out = cp_messenger_begin(m, CP_KIND_DATA, nil, nl, INFINITY, 0, &mark);
    unsigned char h[5] = {0xc6, (unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n};
    cp_buf_append(out, h, 5);
    cp_buf_reserve(out, n);
    memset(out->data + out->len, 'x', n);
    out->len += n;
    CHECK(cp_messenger_commit(m, mark) == 0);
    CHECK(cp_messenger_sent(m, c, 0) == 0);
}

static void test_relay_stops_at_max_unsent(void)
{
    cp_messenger a, b, c, d;
    pair(&a, &b);
    pair(&c, &d);
    for (int i = 0; i < 20; i++) send_bin(&a, 100000);
    wait_n(&b, 20);
    /* Nobody runs d's loop, so c's socket fills after a few frames: the
     * relay stops there and leaves the rest queued in b. */
    int moved = cp_messenger_forward(&c, &b, 1);
    CHECK(moved >= 1 && moved < 20);
    CHECK(cp_messenger_queued(&b) == (size_t)(20 - moved));
    cp_messenger_close(&d);               /* the far side goes away */
    int rc = 0;
    for (int i = 0; i < 100 && rc >= 0; i++) {
        rc = cp_messenger_forward(&c, &b, 1 << 20);
        cp_messenger_flush(&c, 0.1);
    }
    CHECK(rc == -1);
    CHECK(c.state != CP_M_OPEN);
    cp_messenger_close(&a);
    cp_messenger_close(&b);
    cp_messenger_close(&c);
}

int main(void)
{
    test_relay_keeps_everything();
    test_relay_stops_at_max_unsent();
    return check_report("test_forward");
}
