/* transport_mpi.c: see transport_mpi.h. */
#define _GNU_SOURCE /* dladdr */
#include "transport_mpi.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct send_slot {
    MPI_Request req;
    char  *buf;
    size_t n, cap;
} send_slot;

typedef struct mpi_link {
    struct mpi_link *next;
    cp_messenger *m;        /* NULL once closed: a tombstone */
    int    peer, tag, host_side;
    int    reading, writing;
    /* receiving */
    MPI_Request rreq;       /* an MPI_Imrecv into stage, or MPI_REQUEST_NULL */
    char  *stage;           /* a message bigger than the room it was read into */
    size_t stage_len, stage_off, stage_cap;
    int    head;            /* bytes of the next message, known from MPI_Iprobe; -1 unknown */
    uint64_t rx;            /* bytes handed to the messenger (progress) */
    uint64_t got_bytes, got_msgs;   /* received from MPI */
    uint64_t conf_bytes, conf_msgs; /* confirmed to the peer so far */
    MPI_Request creq;       /* the last confirmation sent, from cbuf */
    int64_t cbuf[2];
    int    eof_seen, eof_sent;
    /* sending: slots[0..nsends), plus one kept for the EOF */
    send_slot sends[CP_MPI_SENDS + 1];
    int    nsends;
    uint64_t sent_bytes, sent_msgs;   /* sent */
    uint64_t acked_bytes, acked_msgs; /* confirmed by the peer */
    char   label[64];
} mpi_link;

static const cp_mpi_hooks *g_h;
static MPI_Comm g_comm = MPI_COMM_NULL;
static int g_rank, g_size;
static mpi_link *g_links;
static cp_source g_src;
static cp_mpi_notice_t *g_notices; /* [g_size], rank 0 only */
static char *g_have_notice;

static int src_poll(cp_source *s);

/* ---- yielding ----
 * In an oversubscribed job Open MPI makes every poll that finds nothing
 * call sched_yield (mpi_yield_when_idle): a system call per poll, which on
 * this kind of VM more than doubled a small round trip (raw MPI 1.0 ->
 * 2.4 us, coproc.mpi 3.6 -> 6.1 us). coproc's waits have their own idle
 * policy (source.h: a short spin, then sleeps), so the first
 * CP_MPI_EAGER_POLLS empty polls after a send or a message, where an
 * answer is most likely, are made without yielding; past those the job's
 * setting applies again, so a wait on a shared core still gives way at
 * every poll. The setting is Open MPI's own (found at run time: without
 * it, as with another MPI, nothing changes); code outside these polls
 * (the user's own MPI calls) always runs with the job's setting. */
typedef bool (*set_yield_fn)(bool);
static set_yield_fn g_set_yield;
static bool g_yield_default;
static unsigned g_quiet_polls; /* empty polls since the last send or message */

static void find_yield_switch(void)
{
    Dl_info di;
    void *h = NULL;
    if (dladdr((void *)MPI_Init, &di) && di.dli_fname) h = dlopen(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    void *f = h ? dlsym(h, "opal_progress_set_yield_when_idle") : NULL;
    if (!f) return;
    memcpy(&g_set_yield, &f, sizeof f);
    g_yield_default = g_set_yield(false);
    g_set_yield(g_yield_default);
    if (!g_yield_default) g_set_yield = NULL; /* nothing to turn off */
}

static void note_activity(void) { g_quiet_polls = 0; }

int cp_mpi_yield_state(int *job_default, int *now)
{
    if (!g_set_yield) return 0;
    *job_default = g_yield_default;
    bool cur = g_set_yield(g_yield_default);
    g_set_yield(cur);
    *now = cur;
    return 1;
}

int cp_mpi_setup(const cp_mpi_hooks *h, MPI_Comm world)
{
    if (g_comm != MPI_COMM_NULL) return MPI_SUCCESS;
    int rc = MPI_Comm_dup(world, &g_comm);
    if (rc != MPI_SUCCESS) return rc;
    MPI_Comm_rank(g_comm, &g_rank);
    MPI_Comm_size(g_comm, &g_size);
    g_h = h;
    g_src.poll = src_poll;
    find_yield_switch();
    g_notices = calloc((size_t)g_size, sizeof *g_notices);
    g_have_notice = calloc((size_t)g_size, 1);
    if (!g_notices || !g_have_notice) return MPI_ERR_NO_MEM;
    return MPI_SUCCESS;
}

MPI_Comm cp_mpi_comm(void) { return g_comm; }
int cp_mpi_rank(void) { return g_rank; }
int cp_mpi_size(void) { return g_size; }

/* ---- notices ---- */

static int take_notices(void)
{
    int got = 0;
    for (;;) {
        int flag;
        MPI_Message msg;
        MPI_Status st;
        MPI_Improbe(MPI_ANY_SOURCE, CP_MPI_NOTICE_TAG, g_comm, &flag, &msg, &st);
        if (!flag) return got;
        int64_t v[4] = {0, 0, 0, 0};
        MPI_Mrecv(v, 4, MPI_INT64_T, &msg, MPI_STATUS_IGNORE);
        int r = st.MPI_SOURCE;
        if (r >= 0 && r < g_size && g_notices) {
            cp_mpi_notice_t *n = &g_notices[r];
            n->code = v[0]; n->bid = v[1]; n->item = v[2]; n->pid = v[3];
            g_have_notice[r] = 1;
        }
        got = 1;
    }
}

static void nap(double *d)
{
    struct timespec ts = {0, (long)(*d * 1e9)};
    nanosleep(&ts, NULL);
    *d = *d * 2 > 1e-3 ? 1e-3 : *d * 2;
}

int cp_mpi_send_notice(const cp_mpi_notice_t *n, double timeout)
{
    if (g_comm == MPI_COMM_NULL) return 0;
    int64_t v[4] = {n->code, n->bid, n->item, n->pid};
    MPI_Request req;
    if (MPI_Issend(v, 4, MPI_INT64_T, 0, CP_MPI_NOTICE_TAG, g_comm, &req) != MPI_SUCCESS) return 0;
    double end = g_h->now() + timeout, d = 20e-6;
    for (;;) {
        int done;
        MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (done) return 1;
        if (g_h->now() > end) break;
        src_poll(&g_src);
        nap(&d);
    }
    /* Not taken: the buffer v dies with this frame, so the send cannot stay. */
    MPI_Cancel(&req);
    MPI_Wait(&req, MPI_STATUS_IGNORE);
    return 0;
}

int cp_mpi_notice(int r, cp_mpi_notice_t *n)
{
    if (r < 0 || r >= g_size || !g_have_notice || !g_have_notice[r]) return 0;
    *n = g_notices[r];
    return 1;
}

/* ---- links ---- */

void *cp_mpi_link_new(int peer, int tag, int host_side)
{
    mpi_link *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->peer = peer;
    l->tag = tag;
    l->host_side = host_side;
    l->rreq = l->creq = MPI_REQUEST_NULL;
    l->head = -1;
    snprintf(l->label, sizeof l->label, "rank %d", peer);
    if (!g_links) g_h->source_start(&g_src);
    l->next = g_links;
    g_links = l;
    return l;
}

int cp_mpi_link_peer(const cp_messenger *m, int *tag)
{
    if (m->tp != &cp_transport_mpi || !m->tctx) return -1;
    const mpi_link *l = m->tctx;
    if (tag) *tag = l->tag;
    return l->peer;
}

int cp_mpi_links(void)
{
    int n = 0;
    for (mpi_link *l = g_links; l; l = l->next) n++;
    return n;
}

static void free_link(mpi_link *l)
{
    for (int i = 0; i <= CP_MPI_SENDS; i++) free(l->sends[i].buf);
    free(l->stage);
    free(l);
}

static void unlink_link(mpi_link *l)
{
    for (mpi_link **p = &g_links; *p; p = &(*p)->next)
        if (*p == l) { *p = l->next; break; }
    if (!g_links && g_h) g_h->source_stop(&g_src);
}

/* Completed sends leave the window; their slots (and buffers, kept for
 * reuse) go after the ones still in flight. Returns how many completed. */
static int reap(mpi_link *l)
{
    if (!l->nsends) return 0;
    MPI_Request reqs[CP_MPI_SENDS + 1];
    int idx[CP_MPI_SENDS + 1], outcount = 0;
    for (int i = 0; i < l->nsends; i++) reqs[i] = l->sends[i].req;
    MPI_Testsome(l->nsends, reqs, &outcount, idx, MPI_STATUSES_IGNORE);
    if (outcount <= 0 || outcount == MPI_UNDEFINED) return 0;
    send_slot done[CP_MPI_SENDS + 1];
    int live = 0, nd = 0;
    for (int i = 0; i < l->nsends; i++) {
        send_slot s = l->sends[i];
        if (reqs[i] == MPI_REQUEST_NULL) {
            s.req = MPI_REQUEST_NULL;
            s.n = 0;
            done[nd++] = s;
        } else {
            l->sends[live++] = s;
        }
    }
    for (int j = 0; j < nd; j++) l->sends[live + j] = done[j];
    l->nsends = live;
    return nd;
}

/* Issue a send of n bytes from p (n == 0: the EOF) in a free slot. */
static int issue(mpi_link *l, const char *p, size_t n)
{
    send_slot *s = &l->sends[l->nsends];
    if (n > s->cap) {
        size_t cap = n < 256 ? 256 : n;
        char *b = realloc(s->buf, cap);
        if (!b) return -1;
        s->buf = b;
        s->cap = cap;
    }
    if (n) memcpy(s->buf, p, n);
    if (MPI_Isend(s->buf, (int)n, MPI_BYTE, l->peer, l->tag, g_comm, &s->req) != MPI_SUCCESS) return -1;
    s->n = n;
    l->nsends++;
    l->sent_bytes += n;
    l->sent_msgs++;
    return 0;
}

/* ---- credit ---- */

/* Take in the peer's confirmations. Returns 1 when the window moved. */
static int take_credit(mpi_link *l)
{
    int moved = 0;
    for (;;) {
        int flag;
        MPI_Message msg;
        MPI_Improbe(l->peer, CP_MPI_CREDIT_TAG(l->tag), g_comm, &flag, &msg, MPI_STATUS_IGNORE);
        if (!flag) return moved;
        int64_t v[2] = {0, 0};
        MPI_Mrecv(v, 2, MPI_INT64_T, &msg, MPI_STATUS_IGNORE);
        if ((uint64_t)v[0] > l->acked_bytes) { l->acked_bytes = (uint64_t)v[0]; moved = 1; }
        if ((uint64_t)v[1] > l->acked_msgs) { l->acked_msgs = (uint64_t)v[1]; moved = 1; }
    }
}

static int window_full(const mpi_link *l)
{
    return l->sent_bytes - l->acked_bytes >= CP_MPI_WINDOW || l->sent_msgs - l->acked_msgs >= CP_MPI_WINDOW_MSGS;
}

/* A message of count bytes came in from MPI: confirm once a quarter of a
 * window has (counts are cumulative, so a confirmation skipped while the
 * last one is still on its way is made good by the next). */
static void received(mpi_link *l, size_t count)
{
    l->got_bytes += count;
    l->got_msgs++;
    if (l->got_bytes - l->conf_bytes < CP_MPI_WINDOW / 4 && l->got_msgs - l->conf_msgs < CP_MPI_WINDOW_MSGS / 4)
        return;
    if (l->creq != MPI_REQUEST_NULL) {
        int done;
        MPI_Test(&l->creq, &done, MPI_STATUS_IGNORE);
        if (!done) return;
    }
    l->cbuf[0] = (int64_t)l->got_bytes;
    l->cbuf[1] = (int64_t)l->got_msgs;
    if (MPI_Isend(l->cbuf, 2, MPI_INT64_T, l->peer, CP_MPI_CREDIT_TAG(l->tag), g_comm, &l->creq) == MPI_SUCCESS) {
        l->conf_bytes = l->got_bytes;
        l->conf_msgs = l->got_msgs;
    }
}

static void send_eof(mpi_link *l)
{
    if (l->eof_sent) return;
    l->eof_sent = 1;
    /* The spare slot: the EOF never waits for the window. */
    issue(l, NULL, 0);
}

/* The peer's EOF arrived: answer with ours, so its tombstone can go. */
static void peer_ended(mpi_link *l)
{
    l->eof_seen = 1;
    take_notices();   /* a notice sent before the EOF is here by now */
    send_eof(l);
}

/* Hand out staged bytes. */
static size_t from_stage(mpi_link *l, char *buf, size_t n)
{
    size_t k = l->stage_len - l->stage_off;
    if (k > n) k = n;
    if (buf) memcpy(buf, l->stage + l->stage_off, k);
    l->stage_off += k;
    if (l->stage_off == l->stage_len) l->stage_off = l->stage_len = 0;
    l->rx += k;
    return k;
}

/* Read into buf (NULL: drop). See cp_transport.read. */
static ssize_t link_read(mpi_link *l, char *buf, size_t n)
{
    if (l->rreq != MPI_REQUEST_NULL) {
        /* A large message on its way into stage: nothing before it is done. */
        int done;
        MPI_Test(&l->rreq, &done, MPI_STATUS_IGNORE);
        if (!done) { errno = EAGAIN; return -1; }
        received(l, l->stage_len);
    }
    if (l->stage_off < l->stage_len) return (ssize_t)from_stage(l, buf, n);
    if (l->eof_seen) return 0;
    int flag, count;
    MPI_Message msg = MPI_MESSAGE_NULL;
    if (l->head >= 0) {
        /* MPI_Iprobe just showed this message: a receive with its source
         * and tag gets that very message (one thread receives here). */
        count = l->head;
        l->head = -1;
    } else {
        MPI_Status st;
        MPI_Improbe(l->peer, l->tag, g_comm, &flag, &msg, &st);
        if (!flag) { errno = EAGAIN; return -1; }
        MPI_Get_count(&st, MPI_BYTE, &count);
    }
    if (count <= 0) {
        if (msg != MPI_MESSAGE_NULL) MPI_Mrecv(NULL, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        else MPI_Recv(NULL, 0, MPI_BYTE, l->peer, l->tag, g_comm, MPI_STATUS_IGNORE);
        peer_ended(l);
        return 0;
    }
    size_t c = (size_t)count;
    if (c <= CP_MPI_SMALL && c <= n && buf) {
        /* Small: eager, so its bytes are here already. */
        if (msg != MPI_MESSAGE_NULL) MPI_Mrecv(buf, count, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        else MPI_Recv(buf, count, MPI_BYTE, l->peer, l->tag, g_comm, MPI_STATUS_IGNORE);
        received(l, c);
        l->rx += c;
        return (ssize_t)c;
    }
    if (c > l->stage_cap) {
        char *b = realloc(l->stage, c);
        if (!b) {
            /* The connection breaks; a matched message must still be taken. */
            if (msg != MPI_MESSAGE_NULL) {
                char one;
                MPI_Mrecv(&one, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
            }
            errno = ENOMEM;
            return -1;
        }
        l->stage = b;
        l->stage_cap = c;
    }
    l->stage_len = c;
    l->stage_off = 0;
    if (c <= CP_MPI_SMALL) {
        if (msg != MPI_MESSAGE_NULL) MPI_Mrecv(l->stage, count, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        else MPI_Recv(l->stage, count, MPI_BYTE, l->peer, l->tag, g_comm, MPI_STATUS_IGNORE);
        received(l, c);
        return (ssize_t)from_stage(l, buf, n);
    }
    /* Large: its transfer may need the sender's progress, so never block. */
    if (msg != MPI_MESSAGE_NULL) MPI_Imrecv(l->stage, count, MPI_BYTE, &msg, &l->rreq);
    else MPI_Irecv(l->stage, count, MPI_BYTE, l->peer, l->tag, g_comm, &l->rreq);
    int done;
    MPI_Test(&l->rreq, &done, MPI_STATUS_IGNORE);
    if (!done) { errno = EAGAIN; return -1; }
    received(l, c);
    return (ssize_t)from_stage(l, buf, n);
}

/* After cp_mpi_shutdown a messenger left open has no link: it reads EOF
 * and cannot write. */
static ssize_t mpi_read(cp_messenger *m, char *buf, size_t n)
{
    if (!m->tctx) return 0;
    return link_read(m->tctx, buf, n);
}

static ssize_t mpi_write(cp_messenger *m, const char *buf, size_t n)
{
    mpi_link *l = m->tctx;
    if (!l || l->eof_seen || l->eof_sent) { errno = EPIPE; return -1; }
    if (l->nsends) reap(l);
    if (window_full(l)) take_credit(l);
    if (l->nsends >= CP_MPI_SENDS || window_full(l)) { errno = EAGAIN; return -1; }
    size_t k = n < CP_MPI_MSG_MAX ? n : CP_MPI_MSG_MAX;
    if (issue(l, buf, k)) { errno = ENOMEM; return -1; }
    note_activity();
    if (g_h->activity) g_h->activity();
    return (ssize_t)k;
}

static void mpi_watch(cp_messenger *m, int readable, int writable)
{
    mpi_link *l = m->tctx;
    if (!l) return;
    l->m = m;
    l->reading = readable;
    l->writing = writable;
}

static int mpi_poll(cp_messenger *m, double timeout)
{
    mpi_link *l = m->tctx;
    if (!l) return 0;
    double end = timeout < 0 ? -1 : g_h->now() + timeout, d = 20e-6;
    for (;;) {
        if (l->rreq != MPI_REQUEST_NULL) {
            int done;
            MPI_Test(&l->rreq, &done, MPI_STATUS_IGNORE);
            if (done) return 1;
        } else if (l->stage_off < l->stage_len || l->eof_seen) {
            return 1;
        } else {
            int flag;
            MPI_Iprobe(l->peer, l->tag, g_comm, &flag, MPI_STATUS_IGNORE);
            if (flag) return 1;
        }
        if (end >= 0 && g_h->now() >= end) return 0;
        nap(&d);
    }
}

/* A tombstone can go: its sends are done and nothing more will come. */
static int retirable(mpi_link *l)
{
    if (l->m || l->nsends || !l->eof_seen || l->rreq != MPI_REQUEST_NULL) return 0;
    if (l->creq != MPI_REQUEST_NULL) {
        int done;
        MPI_Test(&l->creq, &done, MPI_STATUS_IGNORE);
        if (!done) return 0;
    }
    return 1;
}

static void mpi_close(cp_messenger *m, int owner)
{
    mpi_link *l = m->tctx;
    if (!l) return;
    m->tctx = NULL;
    if (!owner) {
        /* A forked child: the parent's link, which it must not touch. */
        unlink_link(l);
        free_link(l);
        return;
    }
    l->m = NULL;
    l->reading = l->writing = 0;
    send_eof(l);
    if (retirable(l)) { unlink_link(l); free_link(l); }
}

static const char *mpi_label(const cp_messenger *m)
{
    mpi_link *l = m->tctx;
    if (!l || !l->host_side) return NULL;
    cp_mpi_notice_t n;
    if (cp_mpi_notice(l->peer, &n))
        snprintf(l->label, sizeof l->label, "rank %d (pid %lld, os.exit(%lld))", l->peer, (long long)n.pid, (long long)n.code);
    return l->label;
}

const cp_transport cp_transport_mpi = {
    "mpi", mpi_read, mpi_write, mpi_watch, mpi_poll, mpi_close, mpi_label
};

/* ---- progress ---- */

/* A tombstone takes in and drops what still arrives. */
static int drain_tomb(mpi_link *l)
{
    int got = take_credit(l);
    char scratch[CP_MPI_SMALL];
    for (int i = 0; i < 64; i++) {
        ssize_t n = link_read(l, scratch, sizeof scratch);
        if (n <= 0) break;
        got = 1;
    }
    return got;
}

/* The link (live or tombstone) a message of (source, tag) belongs to. */
static mpi_link *find_link(int source, int tag)
{
    int data_tag = tag & ~1;
    for (mpi_link *l = g_links; l; l = l->next)
        if (l->peer == source && l->tag == data_tag) return l;
    return NULL;
}

/* Take in the pending message MPI_Iprobe showed first in line: 1 when it
 * was taken, 0 when it cannot be now (its link is held back, or not open
 * yet). */
static int take_head(const MPI_Status *st, int *progress)
{
    if (st->MPI_TAG == CP_MPI_NOTICE_TAG) {
        if (g_rank != 0) return 0;
        *progress |= take_notices();
        return 1;
    }
    mpi_link *l = find_link(st->MPI_SOURCE, st->MPI_TAG);
    if (!l) return 0;
    if (st->MPI_TAG & 1) {
        take_credit(l);
        if (l->m && l->writing && l->nsends < CP_MPI_SENDS && !window_full(l)) g_h->flush_nb(l->m);
        *progress = 1;
        return 1;
    }
    if (!l->m) {
        if (!drain_tomb(l)) return 0;
        *progress = 1;
        return 1;
    }
    if (!l->reading || l->stage_len || l->rreq != MPI_REQUEST_NULL) return 0;
    uint64_t before = l->rx;
    int eof = l->eof_seen;
    int count = 0;
    MPI_Get_count(st, MPI_BYTE, &count);
    l->head = count;
    g_h->pump(l->m);
    l->head = -1;   /* not taken (the messenger stopped reading): ask again */
    if (l->rx == before && l->eof_seen == eof && l->rreq == MPI_REQUEST_NULL) return 0;
    *progress = 1;
    return 1;
}

static int poll_links(void);

static int src_poll(cp_source *s)
{
    (void)s;
    int eager = g_set_yield && g_quiet_polls < CP_MPI_EAGER_POLLS;
    if (eager) g_set_yield(false);
    int progress = poll_links();
    if (eager) g_set_yield(g_yield_default);
    if (progress) g_quiet_polls = 0;
    else if (g_quiet_polls < CP_MPI_EAGER_POLLS) g_quiet_polls++;
    return progress;
}

static int poll_links(void)
{
    int progress = 0, any = 0;
    if (g_h->tick) g_h->tick();
    /* The message first in line says which link to pump: one question to
     * MPI per message, whatever the number of links. */
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, g_comm, &any, &st);
    if (any && take_head(&st, &progress)) any = 0;   /* the next poll comes soon */
    for (mpi_link *l = g_links, *next; l; l = next) {
        next = l->next;
        if (l->nsends) reap(l);
        if (l->m && l->writing) {
            /* Waiting for room: a send slot or the peer's confirmation. */
            if (any && window_full(l)) take_credit(l);
            if (l->nsends < CP_MPI_SENDS && !window_full(l)) {
                g_h->flush_nb(l->m);
                progress = 1;
            }
        }
        /* Still something in line (behind a link that is held back): ask
         * each link; and a large receive in progress. */
        if (any || l->rreq != MPI_REQUEST_NULL) {
            if (any && l->sent_msgs != l->acked_msgs) take_credit(l);
            if (l->m && l->reading) {
                uint64_t before = l->rx;
                int eof = l->eof_seen;
                g_h->pump(l->m);
                if (l->rx != before || l->eof_seen != eof) progress = 1;
            } else if (!l->m) {
                progress |= drain_tomb(l);
            }
        }
        if (retirable(l)) { unlink_link(l); free_link(l); }
    }
    if (any && g_rank == 0) progress |= take_notices();
    return progress;
}

void cp_mpi_debug_dump(void);
void cp_mpi_debug_dump(void)
{
    for (mpi_link *l = g_links; l; l = l->next)
        fprintf(stderr, "rank %d link peer %d tag %d m %p r/w %d/%d nsends %d eof_seen %d eof_sent %d rreq %d creq %d stage %zu/%zu sent %llu acked %llu got %llu conf %llu\n",
                g_rank, l->peer, l->tag, (void *)l->m, l->reading, l->writing, l->nsends, l->eof_seen, l->eof_sent,
                l->rreq != MPI_REQUEST_NULL, l->creq != MPI_REQUEST_NULL, l->stage_off, l->stage_len,
                (unsigned long long)l->sent_bytes, (unsigned long long)l->acked_bytes,
                (unsigned long long)l->got_bytes, (unsigned long long)l->conf_bytes);
}

int cp_mpi_quiesce(double timeout)
{
    double end = g_h->now() + timeout, d = 20e-6;
    for (;;) {
        src_poll(&g_src);
        int tombs = 0;
        for (mpi_link *l = g_links; l; l = l->next) tombs += !l->m;
        if (!tombs) return 1;
        if (g_h->now() >= end) return 0;
        nap(&d);
    }
}

void cp_mpi_shutdown(void)
{
    if (g_comm == MPI_COMM_NULL) return;
    for (mpi_link *l = g_links, *next; l; l = next) {
        next = l->next;
        for (int i = 0; i < l->nsends; i++) {
            MPI_Cancel(&l->sends[i].req);
            MPI_Request_free(&l->sends[i].req);
        }
        if (l->rreq != MPI_REQUEST_NULL) {
            MPI_Cancel(&l->rreq);
            MPI_Request_free(&l->rreq);
        }
        if (l->creq != MPI_REQUEST_NULL) MPI_Request_free(&l->creq);
        if (l->m) l->m->tctx = NULL;  /* an open messenger left: it keeps no link */
        free_link(l);
    }
    g_links = NULL;
    if (g_h) g_h->source_stop(&g_src);
    MPI_Comm_free(&g_comm);
    g_comm = MPI_COMM_NULL;
    free(g_notices);
    free(g_have_notice);
    g_notices = NULL;
    g_have_notice = NULL;
}
