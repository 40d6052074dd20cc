/* test_pqueue.c: priority order, FIFO among equals, mixing the ring and the
 * heap, clearing with messages inside. */
#include "check.h"
#include "pqueue.h"

#include <math.h>
#include <stdlib.h>

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

int main(void)
{
    test_fifo_equal();
    test_random_against_reference();
    test_lower_overtakes();
    return check_report("test_pqueue");
}
