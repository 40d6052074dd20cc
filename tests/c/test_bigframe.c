/* test_bigframe.c: the large-frame path of the messenger. The block of a
 * large frame is kept for the next one (reused in place, within its cap,
 * given back after frames that use little of it, freed when the connection
 * goes down or closes); frames of growing then shrinking sizes arrive
 * intact; a large payload sent straight from the caller's bytes
 * (cp_messenger_commit_direct) arrives intact, is copied only when the peer
 * is not reading, respects max_frame, and leaves an interrupt for the next
 * wait. Run under valgrind by the vg build (no leak of a kept block). */
#include "check.h"
#include "messenger_pair.h"
#include "loop.h"
#include "messenger.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MIB (1u << 20)

static cp_chan *nil_chan(cp_messenger *m)
{
    char ch[16];
    size_t cl = cp_channel_nil(ch);
    return cp_messenger_chan(m, ch, cl, 1);
}

/* Bytes that differ from offset to offset (a misplaced chunk shows). */
static char *pattern(size_t n, unsigned seed)
{
    char *p = malloc(n);
    CHECK(p != NULL);
    for (size_t i = 0; i < n; i++) p[i] = (char)(((i + seed) * 2654435761u) >> 24);
    return p;
}

/* Begin a frame on m whose payload is a msgpack bin of n bytes, the header
 * written; returns the mark. */
static size_t begin_bin(cp_messenger *m, size_t n)
{
    char ch[16];
    size_t cl = cp_channel_nil(ch);
    size_t mark = cp_frame_begin(&m->out, CP_KIND_DATA, ch, cl, INFINITY, 0);
    unsigned char hdr[5] = {0xc6, (unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n};
    CHECK(cp_buf_append(&m->out, hdr, 5) == 0);
    return mark;
}

/* Send p[0..n) through the outbound buffer (copied). */
static void send_copy(cp_messenger *m, const char *p, size_t n)
{
    size_t mark = begin_bin(m, n);
    CHECK(cp_buf_append(&m->out, p, n) == 0);
    CHECK(cp_frame_finish(&m->out, mark, m->max_frame) == 0);
    CHECK(cp_messenger_sent(m, nil_chan(m), 0) == 0);
}

/* Send p[0..n) straight from p. Returns what commit_direct returned. */
static int send_direct(cp_messenger *m, const char *p, size_t n)
{
    size_t mark = begin_bin(m, n);
    int rc = cp_messenger_commit_direct(m, mark, p, n);
    if (rc == 0) CHECK(cp_messenger_sent(m, nil_chan(m), 0) == 0);
    return rc;
}

struct until { cp_messenger *m; cp_chan *c; };

static int until_ready(void *ud)
{
    struct until *u = ud;
    return u->c->q.n > 0 || u->m->state != CP_M_OPEN;
}

/* Wait until b has a message queued. */
static void wait_queued(cp_messenger *b)
{
    cp_messenger_flush_all();
    struct until u = {b, nil_chan(b)};
    CHECK(cp_loop_wait(until_ready, &u, 60.0) == 1);
}

/* Wait for the next message on b and check it holds p[0..n). Returns the
 * message (the caller is done with it). */
static cp_msg *expect(cp_messenger *b, const char *p, size_t n)
{
    wait_queued(b);
    cp_msg *msg = cp_messenger_pop(b, nil_chan(b));
    CHECK(msg != NULL);
    if (!msg) return NULL;
    CHECK(msg->len == n + 5);
    CHECK(msg->len == n + 5 && memcmp(msg->data + 5, p, n) == 0);
    return msg;
}

static void roundtrip_copy(cp_messenger *a, cp_messenger *b, size_t n, unsigned seed)
{
    char *p = pattern(n, seed);
    send_copy(a, p, n);
    cp_messenger_done(b, expect(b, p, n));
    free(p);
}

static void test_kept_and_reused(void)
{
    cp_messenger a, b;
    pair(&a, &b);
    CHECK(cp_messenger_big_kept(&b) == 0);
    roundtrip_copy(&a, &b, 3 * MIB, 1);
    size_t kept = cp_messenger_big_kept(&b);
    CHECK(kept >= 3 * MIB);
    void *spare = b.big_spare;
    /* A smaller frame lands in the same block, which stays as large. */
    char *p = pattern(2 * MIB, 2);
    send_copy(&a, p, 2 * MIB);
    cp_msg *msg = expect(&b, p, 2 * MIB);
    CHECK(msg && msg->block == spare);
    CHECK(cp_messenger_big_kept(&b) == 0); /* lent to the message meanwhile */
    cp_messenger_done(&b, msg);
    CHECK(b.big_spare == spare && cp_messenger_big_kept(&b) == kept);
    free(p);
    /* Small frames do not touch it. */
    roundtrip_copy(&a, &b, 1000, 3);
    CHECK(cp_messenger_big_kept(&b) == kept);
    cp_messenger_close(&a);
    cp_messenger_close(&b);
}

static void test_cap(void)
{
    cp_messenger a, b;
    pair(&a, &b);
    b.big_keep = 4 * MIB;
    roundtrip_copy(&a, &b, 4 * MIB - 1024, 4);  /* block just under the cap: kept */
    size_t kept = cp_messenger_big_kept(&b);
    CHECK(kept > 4 * MIB - 1024 && kept <= 4 * MIB);
    roundtrip_copy(&a, &b, 4 * MIB + 1024, 5);  /* grew past it: given back */
    CHECK(cp_messenger_big_kept(&b) == 0);
    roundtrip_copy(&a, &b, 3 * MIB, 6);
    CHECK(cp_messenger_big_kept(&b) >= 3 * MIB);
    b.big_keep = 0;                              /* keep nothing */
    roundtrip_copy(&a, &b, 3 * MIB, 7);
    CHECK(cp_messenger_big_kept(&b) == 0);
    cp_messenger_close(&a);
    cp_messenger_close(&b);
}

static void test_grow_then_shrink(void)
{
    cp_messenger a, b;
    pair(&a, &b);
    static const size_t sizes[] = {300u << 10, 1 * MIB, 5 * MIB, 17 * MIB, 3 * MIB, 257u << 10, 9 * MIB, 1 * MIB};
    size_t most = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        roundtrip_copy(&a, &b, sizes[i], (unsigned)i);
        if (sizes[i] > most) most = sizes[i];
        /* The largest block so far stays. */
        CHECK(cp_messenger_big_kept(&b) >= most && cp_messenger_big_kept(&b) < most + 4096);
    }
    cp_messenger_close(&a);
    cp_messenger_close(&b);
}

static void test_idle_given_back(void)
{
    cp_messenger a, b;
    pair(&a, &b);
    roundtrip_copy(&a, &b, 8 * MIB, 1);
    size_t big = cp_messenger_big_kept(&b);
    CHECK(big >= 8 * MIB);
    /* Frames that use less than an eighth of it: after 8 of them in a row
     * the block goes, and the next frame's own block is kept instead. */
    for (int i = 0; i < 7; i++) {
        roundtrip_copy(&a, &b, 300u << 10, (unsigned)i);
        CHECK(cp_messenger_big_kept(&b) == big);
    }
    roundtrip_copy(&a, &b, 300u << 10, 8);
    CHECK(cp_messenger_big_kept(&b) == 0);
    roundtrip_copy(&a, &b, 300u << 10, 9);
    CHECK(cp_messenger_big_kept(&b) > 0 && cp_messenger_big_kept(&b) < 400u << 10);
    /* A frame that fills its block resets the count. */
    roundtrip_copy(&a, &b, 2 * MIB, 10);
    CHECK(cp_messenger_big_kept(&b) >= 2 * MIB);
    cp_messenger_close(&a);
    cp_messenger_close(&b);
}

static void test_freed_when_down_or_closed(void)
{
    cp_messenger a, b;
    pair(&a, &b);
    roundtrip_copy(&a, &b, 2 * MIB, 1);
    CHECK(cp_messenger_big_kept(&b) > 0);
    cp_messenger_close(&a);                 /* the peer goes: EOF */
    cp_messenger_pump(&b);
    CHECK(b.state == CP_M_EOF);
    CHECK(cp_messenger_big_kept(&b) == 0);
    cp_messenger_close(&b);

    pair(&a, &b);
    roundtrip_copy(&a, &b, 2 * MIB, 2);
    CHECK(cp_messenger_big_kept(&b) > 0);
    cp_messenger_close(&b);                 /* valgrind: no leak */
    CHECK(cp_messenger_big_kept(&b) == 0 && b.big_spare == NULL);
    cp_messenger_close(&b);
    cp_messenger_close(&a);

    /* A message still queued when its messenger closes frees its block. */
    pair(&a, &b);
    char *p = pattern(2 * MIB, 3);
    send_copy(&a, p, 2 * MIB);
    cp_msg *msg = expect(&b, p, 2 * MIB);
    send_copy(&a, p, 2 * MIB);
    cp_messenger_flush(&a, 10.0);
    cp_messenger_close(&b);                 /* done with after the close: freed */
    cp_messenger_done(&b, msg);
    CHECK(cp_messenger_big_kept(&b) == 0);
    cp_messenger_close(&a);
    free(p);
}

static void test_direct(void)
{
    cp_messenger a, b;
    pair(&a, &b);
    /* Both ends in this process: the wait inside the send reads b. */
    char *p = pattern(16 * MIB, 11);
    CHECK(send_direct(&a, p, 16 * MIB) == 0);
    cp_messenger_done(&b, expect(&b, p, 16 * MIB));
    /* Frames before and after it stay in order. */
    char *q = pattern(1000, 12);
    send_copy(&a, q, 1000);
    CHECK(send_direct(&a, p, 16 * MIB) == 0);
    send_copy(&a, q, 1000);
    cp_msg_free(expect(&b, q, 1000));
    cp_messenger_done(&b, expect(&b, p, 16 * MIB));
    cp_msg_free(expect(&b, q, 1000));

    /* A peer that does not read: what the socket does not take is copied,
     * and arrives once the peer reads again. */
    cp_messenger_set_max_queued(&b, 0);
    send_copy(&a, q, 1000);
    wait_queued(&b);                        /* b is now over its bound */
    CHECK(cp_messenger_held(&b));
    CHECK(send_direct(&a, p, 16 * MIB) == 0);
    CHECK(cp_messenger_unsent(&a) > 0);
    cp_messenger_set_max_queued(&b, SIZE_MAX);
    cp_msg_free(expect(&b, q, 1000));
    cp_messenger_done(&b, expect(&b, p, 16 * MIB));

    /* Over max_frame: refused, nothing left in the buffer. */
    a.max_frame = 1 * MIB;
    size_t before = a.out.len;
    CHECK(send_direct(&a, p, 2 * MIB) == -1);
    CHECK(a.out.len == before && a.state == CP_M_OPEN);
    a.max_frame = CP_FRAME_MAX_DEFAULT;

    /* An interrupt that ends the wait is left for the next one. */
    cp_messenger_set_max_queued(&b, 0);
    send_copy(&a, q, 1000);
    wait_queued(&b);
    cp_loop_interrupt();
    CHECK(send_direct(&a, p, 16 * MIB) == 0);
    CHECK(cp_loop_take_interrupt() == 1);
    cp_messenger_set_max_queued(&b, SIZE_MAX);
    cp_msg_free(expect(&b, q, 1000));
    cp_messenger_done(&b, expect(&b, p, 16 * MIB));

    /* A peer that is gone. */
    cp_messenger_close(&b);
    CHECK(send_direct(&a, p, 16 * MIB) == -2);
    cp_messenger_close(&a);
    free(p);
    free(q);
}

int main(void)
{
    test_kept_and_reused();
    test_cap();
    test_grow_then_shrink();
    test_idle_given_back();
    test_freed_when_down_or_closed();
    test_direct();
    return check_report("test_bigframe");
}
