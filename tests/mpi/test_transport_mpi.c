/* test_transport_mpi.c: the messenger over the MPI transport, two ranks
 * (mpirun -n 2). The same guarantees as over a socket: order and
 * priorities, counting, large frames both ways at once without deadlock,
 * back-pressure from a receiver that stops reading, a bad frame breaking
 * the connection, end of stream both ways with the closed links retired;
 * exit notices. Prints the C-level round trip. */
#include "check.h"
#include "loop.h"
#include "messenger.h"
#include "source.h"
#include "transport_mpi.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank;

static const cp_mpi_hooks hooks = {
    cp_messenger_pump, cp_messenger_flush_nb, cp_source_start, cp_source_stop, cp_now, NULL, cp_source_activity
};

static void open_link(cp_messenger *m, int tag)
{
    cp_messenger_init(m);
    void *ctx = cp_mpi_link_new(1 - rank, tag, rank == 0);
    CHECK(ctx != NULL);
    CHECK(cp_messenger_open_transport(m, &cp_transport_mpi, ctx, 0) == 0);
}

static cp_chan *nil_chan(cp_messenger *m)
{
    char ch[4];
    size_t cl = cp_channel_nil(ch);
    return cp_messenger_chan(m, ch, cl, 1);
}

/* A frame whose payload is a msgpack bin of n bytes of fill. */
static void send_bin(cp_messenger *m, double prio, unsigned flags, size_t n, char fill)
{
    char ch[4];
    size_t cl = cp_channel_nil(ch);
    cp_chan *c = cp_messenger_chan(m, ch, cl, 1);
    size_t mark;
    cp_buf *out = cp_messenger_begin(m, CP_KIND_DATA, ch, cl, prio, flags, &mark);
    unsigned char hdr[5] = {0xc6, (unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n};
    cp_buf_append(out, hdr, 5);
    cp_buf_reserve(out, n);
    memset(out->data + out->len, fill, n);
    out->len += n;
    CHECK(cp_messenger_commit(m, mark) == 0);
    CHECK(cp_messenger_sent(m, c, flags) == 0);
}

struct until { cp_messenger *m; cp_chan *c; size_t n; };

static int until_ready(void *ud)
{
    struct until *u = ud;
    return u->c->q.n >= u->n || u->m->state != CP_M_OPEN;
}

static int wait_for(cp_messenger *m, cp_chan *c, size_t n, double timeout)
{
    cp_messenger_flush_all();
    struct until u = {m, c, n};
    return cp_loop_wait(until_ready, &u, timeout);
}

static void barrier(void) { MPI_Barrier(MPI_COMM_WORLD); }

void cp_mpi_debug_dump(void);
static int quiesced(void)
{
    if (cp_mpi_quiesce(10.0)) return 1;
    cp_mpi_debug_dump();
    return 0;
}

static void test_priorities_and_counting(void)
{
    cp_messenger m;
    open_link(&m, 10);
    cp_chan *c = nil_chan(&m);
    if (rank == 1) {
        send_bin(&m, INFINITY, CP_FLAG_REQUEST, 1, 'x');
        send_bin(&m, 3, CP_FLAG_REQUEST, 1, 'c');
        send_bin(&m, 1, CP_FLAG_REQUEST, 1, 'a');
        send_bin(&m, 3, CP_FLAG_REQUEST, 1, 'd');
        CHECK(cp_messenger_flush(&m, 5.0) == 1);
        CHECK(c->requests_sent == 4);
        CHECK(wait_for(&m, c, 1, 10.0) == 1);       /* the reply */
        cp_msg *r = cp_messenger_pop(&m, c);
        CHECK(r && (r->flags & CP_FLAG_REPLY));
        cp_msg_free(r);
        CHECK(c->replies_received == 1 && cp_messenger_remaining(&m) == 3);
    } else {
        CHECK(wait_for(&m, c, 4, 10.0) == 1);
        const char want[] = "acdx";
        for (int i = 0; i < 4; i++) {
            cp_msg *x = cp_messenger_pop(&m, c);
            CHECK(x && x->len == 6 && x->data[5] == want[i]);
            cp_msg_free(x);
        }
        CHECK(c->requests_received == 4);
        send_bin(&m, INFINITY, CP_FLAG_REPLY, 1, 'r');
        CHECK(cp_messenger_flush(&m, 5.0) == 1);
    }
    barrier();
    cp_messenger_close(&m);
}

static void test_large_both_ways(void)
{
    /* 32 MiB each way at once: many windows' worth. */
    cp_messenger m;
    open_link(&m, 12);
    size_t n = 32u << 20;
    send_bin(&m, INFINITY, 0, n, rank ? 'B' : 'A');
    cp_chan *c = nil_chan(&m);
    if (wait_for(&m, c, 1, 20.0) != 1 || m.state != CP_M_OPEN) {
        fprintf(stderr, "rank %d: unsent %zu queued %zu big %zu/%zu in %zu state %d error %s errno %d\n", rank, cp_messenger_unsent(&m),
                cp_messenger_queued(&m), m.big_have, m.big_total, cp_buf_size(&m.in), m.state, m.error ? m.error : "-", m.write_errno);
        cp_mpi_debug_dump();
    }
    cp_msg *x = cp_messenger_pop(&m, c);
    char want = rank ? 'A' : 'B';
    CHECK(x && x->len == n + 5 && x->data[5] == want && x->data[n + 4] == want);
    cp_msg_free(x);
    CHECK(cp_messenger_flush(&m, 60.0) == 1);
    barrier();
    cp_messenger_close(&m);
}

/* Rank 0 stops reading (a small bound on its queues): rank 1's sends pile
 * up in its own buffer, not in MPI's on rank 0, until rank 0 reads. */
static void test_back_pressure(void)
{
    cp_messenger m;
    open_link(&m, 14);
    cp_chan *c = nil_chan(&m);
    size_t each = 256u << 10;
    int count = 160; /* 40 MiB */
    if (rank == 0) {
        cp_messenger_set_max_queued(&m, 1u << 20);
        barrier();
        /* Read while rank 1 sends: up to the bound, then no more. */
        wait_for(&m, c, (size_t)count, 2.0);
        barrier();                              /* rank 1 is stuck now */
        CHECK(cp_messenger_held(&m));
        CHECK(m.queued_bytes < (4u << 20));
        cp_messenger_set_max_queued(&m, SIZE_MAX);
        int got = 0;
        while (got < count) {
            if (wait_for(&m, c, 1, 30.0) != 1) break;
            cp_msg *x;
            while ((x = cp_messenger_pop(&m, c))) { got++; cp_msg_free(x); }
        }
        CHECK(got == count);
    } else {
        barrier();
        int sent = 0;
        for (; sent < count; sent++) {
            if (cp_messenger_room(&m, 1.0) != 1) break;
            send_bin(&m, INFINITY, 0, each, 'p');
        }
        cp_messenger_flush_nb(&m);
        /* Stuck: what rank 0 holds is its bound plus a window or so. */
        CHECK(sent < count);
        CHECK(cp_messenger_unsent(&m) > (4u << 20));
        barrier();
        for (; sent < count; sent++) {
            CHECK(cp_messenger_room(&m, 30.0) == 1);
            send_bin(&m, INFINITY, 0, each, 'p');
        }
        CHECK(cp_messenger_flush(&m, 30.0) == 1);
    }
    barrier();
    cp_messenger_close(&m);
}

static void test_bad_frame(void)
{
    cp_messenger m;
    open_link(&m, 16);
    cp_chan *c = nil_chan(&m);
    if (rank == 1) {
        send_bin(&m, INFINITY, 0, 3, 'k');
        CHECK(cp_messenger_send_raw(&m, "\x00\x00\x00\x06\x95\x09\xc0\xc0\x00\x2a", 10) == 0);
        CHECK(cp_messenger_flush(&m, 5.0) == 1);
    } else {
        CHECK(wait_for(&m, c, 2, 10.0) == 1);
        CHECK(m.state == CP_M_BROKEN && m.error && strstr(m.error, "kind"));
        CHECK(c->q.n == 1);                 /* the good frame is kept */
    }
    barrier();
    cp_messenger_close(&m);
}

/* Rank 1 closes after a frame: rank 0 reads it, then EOF; its writes then
 * fail. Both links retire. */
static void test_eof(void)
{
    cp_messenger m;
    open_link(&m, 18);
    cp_chan *c = nil_chan(&m);
    if (rank == 1) {
        send_bin(&m, INFINITY, CP_FLAG_REQUEST, 5, 'e');
        CHECK(cp_messenger_flush(&m, 5.0) == 1);
        cp_messenger_close(&m);
    } else {
        CHECK(wait_for(&m, c, 1, 10.0) == 1);
        struct until u = {&m, c, 2};
        CHECK(cp_loop_wait(until_ready, &u, 10.0) == 1);
        CHECK(m.state == CP_M_EOF);
        cp_msg *x = cp_messenger_pop(&m, c);
        CHECK(x && x->len == 10);
        cp_msg_free(x);
        CHECK(cp_messenger_exhausted(&m, c));
        cp_messenger_close(&m);
    }
    CHECK(quiesced());
    barrier();
    CHECK(cp_mpi_links() == 0);
}

static void test_notice(void)
{
    cp_messenger m;
    open_link(&m, 20);
    if (rank == 1) {
        cp_mpi_notice_t n = {3, 17, 2, getpid()};
        CHECK(cp_mpi_send_notice(&n, 10.0) == 1);
        cp_messenger_close(&m);
    } else {
        /* Notices are taken in by polls (any wait). */
        cp_mpi_notice_t n;
        double end = cp_now() + 10;
        while (!cp_mpi_notice(1, &n) && cp_now() < end) {
            cp_chan *c = nil_chan(&m);
            wait_for(&m, c, 1, 0.01);
        }
        CHECK(cp_mpi_notice(1, &n) && n.code == 3 && n.bid == 17 && n.item == 2);
        CHECK(strstr(cp_messenger_label(&m), "os.exit(3)") != NULL);
        cp_messenger_close(&m);
    }
    barrier();
    CHECK(quiesced());
}

static void rtt(void)
{
    cp_messenger m;
    open_link(&m, 22);
    cp_chan *c = nil_chan(&m);
    int n = 20000;
    barrier();
    double t0 = cp_now();
    for (int i = 0; i < n; i++) {
        if (rank == 0) send_bin(&m, INFINITY, 0, 8, 'r');
        if (wait_for(&m, c, 1, 10.0) != 1) { CHECK(0); break; }
        cp_msg_free(cp_messenger_pop(&m, c));
        if (rank == 1) send_bin(&m, INFINITY, 0, 8, 'r');
    }
    if (rank == 0) printf("C round trip over the MPI transport: %.2f us\n", (cp_now() - t0) / n * 1e6);
    CHECK(cp_messenger_flush(&m, 5.0) == 1);
    barrier();
    cp_messenger_close(&m);
    CHECK(quiesced());
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        fprintf(stderr, "run with mpirun -n 2\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    CHECK(cp_mpi_setup(&hooks, MPI_COMM_WORLD) == MPI_SUCCESS);
    rank = cp_mpi_rank();
    test_priorities_and_counting();
    test_large_both_ways();
    test_back_pressure();
    test_bad_frame();
    test_eof();
    test_notice();
    rtt();
    CHECK(quiesced());
    cp_mpi_shutdown();
    char name[32];
    snprintf(name, sizeof name, "test_transport_mpi rank %d", rank);
    int rc = check_report(name);
    int worst = 0;
    MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return worst;
}
