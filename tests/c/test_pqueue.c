/* test_pqueue.c: priority order, FIFO among equals, mixing the ring and the
 * heap, clearing with messages inside. */
#include "check.h"
#include "pqueue.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static cp_msg *msg(double prio, uint64_t seq)
{
    cp_msg *m = cp_msg_new(0, 0, prio, "", 0);
    m->seq = seq;
    return m;
}

static void test_fifo_equal(void)
{
    cp_pqueue q = CP_PQUEUE_INIT;
    for (uint64_t i = 1; i <= 1000; i++) CHECK(cp_pqueue_push(&q, msg(INFINITY, i)) == 0);
    for (uint64_t i = 1; i <= 1000; i++) {
        cp_msg *m = cp_pqueue_pop(&q);
        CHECK(m && m->seq == i);
        cp_msg_free(m);
    }
    CHECK(cp_pqueue_pop(&q) == NULL);
    cp_pqueue_clear(&q);
}

static void test_random_against_reference(void)
{
    /* Random small priorities so there are many ties; the output must be
     * sorted by (priority, seq). Interleave pops to exercise both parts. */
    srand(7);
    cp_pqueue q = CP_PQUEUE_INIT;
    uint64_t seq = 0;
    double last_p = -INFINITY;
    uint64_t last_s = 0;
    size_t popped = 0, pushed = 0;
    for (int round = 0; round < 20000; round++) {
        if (rand() % 3) {
            double p = (double)(rand() % 5);
            if (rand() % 7 == 0) p = INFINITY;
            CHECK(cp_pqueue_push(&q, msg(p, ++seq)) == 0);
            pushed++;
            last_p = -INFINITY; /* a new arrival may sort before what came out */
        } else {
            cp_msg *m = cp_pqueue_pop(&q);
            if (!m) continue;
            popped++;
            CHECK(m->priority > last_p || (m->priority == last_p && m->seq > last_s));
            last_p = m->priority;
            last_s = m->seq;
            cp_msg_free(m);
        }
    }
    /* Drain: fully sorted now. */
    last_p = -INFINITY;
    last_s = 0;
    cp_msg *m;
    while ((m = cp_pqueue_pop(&q))) {
        popped++;
        CHECK(m->priority > last_p || (m->priority == last_p && m->seq > last_s));
        last_p = m->priority;
        last_s = m->seq;
        cp_msg_free(m);
    }
    CHECK(popped == pushed);
    CHECK(q.n == 0);
    cp_pqueue_clear(&q);
}

static void test_lower_overtakes(void)
{
    cp_pqueue q = CP_PQUEUE_INIT;
    cp_pqueue_push(&q, msg(INFINITY, 1));
    cp_pqueue_push(&q, msg(INFINITY, 2));
    cp_pqueue_push(&q, msg(5, 3));
    cp_pqueue_push(&q, msg(1, 4));
    cp_pqueue_push(&q, msg(5, 5));
    uint64_t want[] = {4, 3, 5, 1, 2};
    for (int i = 0; i < 5; i++) {
        cp_msg *m = cp_pqueue_pop(&q);
        CHECK(m && m->seq == want[i]);
        cp_msg_free(m);
    }
    cp_pqueue_push(&q, msg(2, 6)); /* cleared with messages inside: no leak */
    cp_pqueue_push(&q, msg(3, 7));
    cp_pqueue_clear(&q);
    CHECK(q.n == 0 && cp_pqueue_pop(&q) == NULL);
}

/* A stream (a run of one priority) is carved from the queue's slabs: every
 * message from the CP_SLAB_AFTER-th on lies in a slab, comes out intact and
 * in order, and once all are freed the current slab is reused from its
 * start. Messages of another priority, and large ones, get their own
 * blocks; a message popped before a clear may be freed after it. */
static void test_slabs(void)
{
    cp_pqueue q = CP_PQUEUE_INIT;
    char payload[300];
    for (int round = 0; round < 3; round++) {
        const void *first_slabbed = NULL;
        for (uint32_t i = 0; i < 20000; i++) {
            size_t len = 1 + i % 40;
            memset(payload, (char)('a' + i % 26), len);
            cp_msg *m = cp_pqueue_add(&q, 0, i & 3, 7.0, i + 1, payload, len);
            CHECK(m != NULL);
            if (i + 1 >= CP_SLAB_AFTER) CHECK(m->slab != NULL);
            if (i + 1 == CP_SLAB_AFTER + 100) first_slabbed = m;
        }
        for (uint32_t i = 0; i < 20000; i++) {
            cp_msg *m = cp_pqueue_pop(&q);
            size_t len = 1 + i % 40;
            CHECK(m && m->seq == i + 1 && m->len == len && m->flags == (i & 3) && m->priority == 7.0);
            CHECK(m && m->data[0] == (char)('a' + i % 26) && m->data[len - 1] == (char)('a' + i % 26));
            cp_msg_free(m);
        }
        CHECK(q.n == 0 && first_slabbed != NULL);
        /* all freed: the next one starts the current slab again */
        cp_msg *m = cp_pqueue_add(&q, 0, 0, 7.0, 1, "x", 1);
        cp_msg *n = cp_pqueue_add(&q, 0, 0, 7.0, 2, "y", 1);
        CHECK(m && m->slab && n && n->slab == m->slab && (char *)n > (char *)m);
        CHECK(cp_pqueue_pop(&q) == m && cp_pqueue_pop(&q) == n);
        cp_msg_free(m);
        cp_msg_free(n);
    }
    /* another priority goes to the heap, a large payload to its own block */
    cp_msg *a = cp_pqueue_add(&q, 0, 0, 7.0, 10, "a", 1);
    cp_msg *h = cp_pqueue_add(&q, 0, 0, 1.0, 11, "h", 1);
    cp_msg *big = cp_pqueue_add(&q, 0, 0, 7.0, 12, payload, sizeof payload);
    CHECK(a && a->slab && h && !h->slab && big && !big->slab);
    CHECK(cp_pqueue_pop(&q) == h);
    cp_msg_free(h);
    CHECK(cp_pqueue_pop(&q) == a);
    cp_msg_free(a);
    cp_pqueue_clear(&q);   /* big still inside: freed here */
    /* a slab outlives its queue while a popped message holds it */
    for (uint32_t i = 0; i < 100; i++) cp_pqueue_add(&q, 0, 0, 7.0, i + 1, "z", 1);
    cp_msg *late = NULL;
    for (int i = 0; i < 99; i++) {
        cp_msg *m = cp_pqueue_pop(&q);
        if (i == 50) late = m;
        else cp_msg_free(m);
    }
    CHECK(late && late->slab && late->data[0] == 'z');
    cp_pqueue_clear(&q);
    CHECK(late->data[0] == 'z'); /* still valid: under valgrind/ASan a use after free shows */
    cp_msg_free(late);
}

/* Up to CP_PQ_RINGS priorities interleaved each get a ring (and slabs), a
 * further one the heap; everything comes out by (priority, arrival). */
static void test_rings_per_priority(void)
{
    cp_pqueue q = CP_PQUEUE_INIT;
    const int np = CP_PQ_RINGS + 1;
    uint64_t seq = 0;
    size_t slabbed = 0;
    for (int i = 0; i < 5000; i++) {
        double prio = (double)(i % np);
        cp_msg *m = cp_pqueue_add(&q, 0, 0, prio, ++seq, "p", 1);
        CHECK(m != NULL);
        if (m && m->slab) slabbed++;
        if (m && i >= 100 && i % np < CP_PQ_RINGS) CHECK(m->slab != NULL);
        if (m && i % np == CP_PQ_RINGS) CHECK(m->slab == NULL); /* no ring left: the heap */
    }
    CHECK(slabbed > 3900);
    double lp = -1;
    uint64_t ls = 0;
    size_t popped = 0;
    cp_msg *m;
    while ((m = cp_pqueue_pop(&q))) {
        CHECK(m->priority > lp || (m->priority == lp && m->seq > ls));
        lp = m->priority;
        ls = m->seq;
        popped++;
        cp_msg_free(m);
    }
    CHECK(popped == 5000);
    cp_pqueue_clear(&q);
}

int main(void)
{
    test_fifo_equal();
    test_random_against_reference();
    test_lower_overtakes();
    test_slabs();
    test_rings_per_priority();
    return check_report("test_pqueue");
}
