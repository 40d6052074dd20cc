/* messenger.c: see messenger.h. */
#include "messenger.h"
#include "bigendian.h"
#include "loop.h"
#include "mtune.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK (64u << 10)

static cp_messenger *g_all;   /* open messengers of this process */
static pid_t g_all_pid;
static uint64_t g_arrivals;   /* messages queued by any messenger of this process */

/* ---- the blocks of large frames ---- */

/* A large frame's block: this header, then the frame's bytes (m->big points
 * past the header; the block, header first, is what a message owns). */
typedef union big_hdr { size_t cap; max_align_t align; } big_hdr;
#define BIG_HDR(p) ((big_hdr *)(void *)(p) - 1) /* from m->big to its block */
/* A message made from a large frame is never a small one (cp_msg_free
 * recycles those as if their payload were inline). */
_Static_assert(CP_BIG_FRAME > CP_MSG_SMALL + CP_CHANNEL_MAX + 64, "large frames must not look small");
/* The block kept is given back after this many frames in a row that used
 * less than an eighth of it: one huge frame does not pin its memory for
 * ever when only moderate ones follow. */
#define BIG_IDLE_FRAMES 8

static size_t g_kept;         /* bytes of the blocks all messengers of this process keep */

static void drop_spare(cp_messenger *m)
{
    if (!m->big_spare) return;
    g_kept -= ((big_hdr *)m->big_spare)->cap;
    free(m->big_spare);
    m->big_spare = NULL;
    m->big_idle = 0;
}

/* Free the large frame being read, if any. */
static void drop_big(cp_messenger *m)
{
    if (m->big) free(BIG_HDR(m->big));
    m->big = NULL;
    m->big_have = m->big_cap = m->big_total = 0;
}

static void link_in(cp_messenger *m)
{
    if (g_all_pid != cp_self_pid()) { g_all = NULL; g_all_pid = cp_self_pid(); }
    m->prev = NULL;
    m->next = g_all;
    if (g_all) g_all->prev = m;
    g_all = m;
}

static void link_out(cp_messenger *m)
{
    if (m->prev) m->prev->next = m->next;
    else if (g_all == m) g_all = m->next;
    if (m->next) m->next->prev = m->prev;
    m->prev = m->next = NULL;
}

void cp_messenger_init(cp_messenger *m)
{
    memset(m, 0, sizeof *m);
    m->fd = -1;
    m->pidfd = -1;
    m->state = CP_M_CLOSED;
    m->max_frame = CP_FRAME_MAX_DEFAULT;
    m->max_queued = CP_MAX_QUEUED_DEFAULT;
    m->send_timeout = -1;
    m->big_keep = CP_BIG_KEEP;
}

/* Drop buffers and queues; leave the struct reusable-as-closed. */
static void release(cp_messenger *m)
{
    for (int i = 0; i < CP_CHAN_BUCKETS; i++) {
        cp_chan *c = m->buckets[i];
        while (c) {
            cp_chan *next = c->next;
            cp_pqueue_clear(&c->q);
            free(c);
            c = next;
        }
        m->buckets[i] = NULL;
    }
    m->last_chan = NULL;
    cp_pqueue_clear(&m->special);
    cp_buf_free(&m->in);
    cp_buf_free(&m->out);
    drop_big(m);
    drop_spare(m);
    m->queued = 0;
    m->queued_bytes = 0;
}

/* Tell the transport what to watch for, when that changes. */
static inline void watch(cp_messenger *m, int readable, int writable)
{
    if (m->reading == readable && m->writing == writable) return;
    m->reading = readable;
    m->writing = writable;
    m->tp->watch(m, readable, writable);
}

static void stop_watchers(cp_messenger *m)
{
    if (m->owner != cp_self_pid()) return; /* the loop they sit in is not ours */
    watch(m, 0, 0);
    ev_io_stop(cp_loop(), &m->pw);
    if (m->pidfd >= 0) { close(m->pidfd); m->pidfd = -1; }
}

/* The connection is over: keep what was queued, stop watching. */
static void set_down(cp_messenger *m, int state)
{
    if (m->state != CP_M_OPEN) return;
    m->state = state;
    stop_watchers(m);
    drop_spare(m); /* no large frame will come */
    /* Nothing unsent can reach a peer that is gone. */
    m->out.start = m->out.len = 0;
}

static void on_peer_exit(struct ev_loop *loop, ev_io *w, int revents);
static void pump_all(cp_messenger *m);

/* The transport is set up (m->tp, and m->fd or m->tctx): start reading. */
static void open_common(cp_messenger *m, int arrival_order, cp_proc *peer)
{
    m->arrival_order = arrival_order;
    m->peer = peer;
    m->state = CP_M_OPEN;
    m->owner = cp_self_pid();
    m->reading = m->writing = 0;
    watch(m, 1, 0);
    if (peer && peer->pidfd >= 0) m->pidfd = fcntl(peer->pidfd, F_DUPFD_CLOEXEC, 0);
    if (m->pidfd >= 0) {
        ev_io_init(&m->pw, on_peer_exit, m->pidfd, EV_READ);
        m->pw.data = m;
        ev_io_start(cp_loop(), &m->pw);
    }
    link_in(m);
}

int cp_messenger_open(cp_messenger *m, int fd, int arrival_order, cp_proc *peer)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    cp_transport_socket_setup(m, fd);
    open_common(m, arrival_order, peer);
    return 0;
}

int cp_messenger_open_transport(cp_messenger *m, const cp_transport *tp, void *ctx, int arrival_order)
{
    m->tp = tp;
    m->tctx = ctx;
    m->fd = -1;
    open_common(m, arrival_order, NULL);
    return 0;
}

void cp_messenger_close(cp_messenger *m)
{
    if (m->state == CP_M_CLOSED && !m->tp) return;
    int mine = m->owner == cp_self_pid();
    if (m->state == CP_M_OPEN) stop_watchers(m);
    if (mine) link_out(m);
    if (m->tp) m->tp->close(m, mine);
    if (m->pidfd >= 0 && mine) close(m->pidfd);
    m->tp = NULL;
    m->tctx = NULL;
    m->fd = m->pidfd = -1;
    m->reading = m->writing = 0;
    m->state = CP_M_CLOSED;
    g_arrivals++;   /* a wait on it can end now */
    release(m);
}

void cp_messenger_forget_all(void)
{
    if (g_all_pid != cp_self_pid()) {
        /* Inherited list: every entry belongs to the parent. */
        for (cp_messenger *m = g_all, *next; m; m = next) {
            next = m->next;
            /* The child's own connection kept its number, which none of
             * these has (proc.h): close them all. */
            if (m->tp) m->tp->close(m, 0);
            if (m->pidfd >= 0) close(m->pidfd);
            m->tp = NULL;
            m->tctx = NULL;
            m->fd = m->pidfd = -1;
            m->reading = m->writing = 0;
            m->state = CP_M_CLOSED;
            m->prev = m->next = NULL;
            release(m);
        }
        g_all = NULL;
        g_all_pid = cp_self_pid();
    }
}

static inline int key_eq(const cp_chan *c, const char *key, size_t len)
{
    if (c->keylen != len) return 0;
    for (size_t i = 0; i < len; i++)
        if (c->key[i] != key[i]) return 0;
    return 1;
}

cp_chan *cp_messenger_chan_lookup(cp_messenger *m, const char *key, size_t len, int create)
{
    /* Most traffic stays on one channel: try the last one first. */
    if (m->last_chan && key_eq(m->last_chan, key, len)) return m->last_chan;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)key[i]) * 16777619u;
    cp_chan **slot = &m->buckets[h % CP_CHAN_BUCKETS];
    for (cp_chan *c = *slot; c; c = c->next)
        if (key_eq(c, key, len)) return m->last_chan = c;
    if (!create) return NULL;
    cp_chan *c = calloc(1, sizeof *c + len);
    if (!c) return NULL;
    c->keylen = len;
    memcpy(c->key, key, len);
    c->next = *slot;
    *slot = c;
    return m->last_chan = c;
}

long cp_messenger_flush_nb(cp_messenger *m)
{
    if (m->state != CP_M_OPEN) return -1;
    m->last_write = cp_now();
    const cp_transport *tp = m->tp;
    while (cp_buf_size(&m->out)) {
        ssize_t n = tp->write(m, cp_buf_head(&m->out), cp_buf_size(&m->out));
        if (n > 0) { cp_buf_consume(&m->out, (size_t)n); continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!m->writing) watch(m, m->reading, 1);
            return (long)cp_buf_size(&m->out);
        }
        m->write_errno = n < 0 ? errno : EPIPE;
        pump_all(m);              /* keep whatever the peer sent before going */
        set_down(m, CP_M_EOF);
        return -1;
    }
    if (m->writing) watch(m, m->reading, 0);
    m->frames_pending = 0;
    return 0;
}

static int room_or_held(void *ud)
{
    cp_messenger *m = ud;
    return m->state != CP_M_OPEN || cp_buf_size(&m->out) <= CP_HIGH_WATER / 2 || cp_messenger_held(m);
}

int cp_messenger_room(cp_messenger *m, double timeout)
{
    if (m->state != CP_M_OPEN) return CP_WAIT_DOWN;
    if (cp_buf_size(&m->out) <= CP_HIGH_WATER) return 1;
    /* Past the high-water mark: wait (reading meanwhile) until half of it
     * has drained, so a sender cannot outrun its peer forever. */
    if (!m->writing && cp_messenger_flush_nb(m) < 0) return CP_WAIT_DOWN;
    if (cp_buf_size(&m->out) <= CP_HIGH_WATER) return 1;
    int rc = cp_loop_wait(room_or_held, m, timeout);
    if (m->state != CP_M_OPEN) return CP_WAIT_DOWN;
    if (cp_buf_size(&m->out) <= CP_HIGH_WATER / 2) return 1;
    if (cp_messenger_held(m)) return CP_WAIT_HELD;
    return rc;
}

int cp_messenger_sent(cp_messenger *m, cp_chan *c, unsigned flags)
{
    if (m->state != CP_M_OPEN) return -1;
    if (!m->writing) {
        /* (With the socket full, the loop drains it.) The clock is read for
         * a lone message (first in the buffer) and every 16th one of a
         * burst: cheap enough, and bursts still go out often. */
        size_t pending = cp_buf_size(&m->out);
        int check_clock = m->frames_pending++ == 0 || (m->frames_pending & 15) == 0;
        if (pending >= CP_FLUSH_BYTES || (check_clock && cp_now() - m->last_write >= CP_CORK_SECONDS))
            if (cp_messenger_flush_nb(m) < 0) return -1;
    }
    /* Counted only now: a frame whose write failed was never sent. */
    m->messages_sent++;
    if (c) {
        if (flags & CP_FLAG_REQUEST) c->requests_sent++;
        if (flags & CP_FLAG_REPLY) c->replies_sent++;
    }
    return 0;
}

void cp_messenger_flush_all(void)
{
    if (g_all_pid != cp_self_pid()) return;
    for (cp_messenger *m = g_all; m; m = m->next)
        if (m->state == CP_M_OPEN && cp_buf_size(&m->out) && !m->writing)
            cp_messenger_flush_nb(m);
}

static int all_out_done(void *ud)
{
    (void)ud;
    for (cp_messenger *m = g_all; m; m = m->next)
        if (m->state == CP_M_OPEN && cp_buf_size(&m->out) && !cp_messenger_held(m)) return 0;
    return 1;
}

int cp_messenger_flush_all_wait(double timeout)
{
    if (g_all_pid != cp_self_pid()) return 1;
    cp_messenger_flush_all();
    return cp_loop_wait(all_out_done, NULL, timeout) == 1;
}

static int out_done_or_held(void *ud)
{
    cp_messenger *m = ud;
    return m->state != CP_M_OPEN || cp_buf_size(&m->out) == 0 || cp_messenger_held(m);
}

int cp_messenger_flush(cp_messenger *m, double timeout)
{
    if (cp_messenger_flush_nb(m) < 0) return CP_WAIT_DOWN;
    int rc = cp_loop_wait(out_done_or_held, m, timeout);
    if (m->state != CP_M_OPEN) return CP_WAIT_DOWN;
    if (cp_buf_size(&m->out) == 0) return 1;
    if (cp_messenger_held(m)) return CP_WAIT_HELD;
    return rc;
}

int cp_messenger_drain(cp_messenger *m, double timeout)
{
    if (m->state != CP_M_OPEN) return CP_WAIT_DOWN;
    m->discard = 1;
    if (!m->reading && m->owner == cp_self_pid()) watch(m, 1, m->writing);
    return cp_messenger_flush(m, timeout);
}

/* ---- the bound on queued bytes ---- */

/* What a queued message costs: its footprint and overhead. A message read
 * as a large frame keeps the whole frame's block, a few bytes more than its
 * payload, which the overhead covers. */
static inline size_t msg_bytes(const cp_msg *msg) { return cp_msg_footprint(msg->len) + CP_MSG_OVERHEAD; }

/* Stop reading the socket: the peer's sends feel it. */
static void hold(cp_messenger *m)
{
    if (m->reading) watch(m, 0, m->writing);
}

static void parse_frames(cp_messenger *m);
static int begin_big(cp_messenger *m, size_t total);

/* After something was taken out of the queues: once the queue is back
 * within its bound, queue the frames already read, then read again. */
static void maybe_resume(cp_messenger *m)
{
    if (m->state != CP_M_OPEN || cp_messenger_held(m) || m->reading) return;
    if (m->owner != cp_self_pid()) return;
    if (cp_buf_size(&m->in) && !m->big) {
        parse_frames(m);
        if (m->state != CP_M_OPEN || cp_messenger_held(m)) return;
    }
    watch(m, 1, m->writing);
    /* A peer that died while we held back: take the rest now, then end. */
    if (m->peer_exited) cp_messenger_pump(m);
}

void cp_messenger_set_max_queued(cp_messenger *m, size_t n)
{
    m->max_queued = n;
    if (cp_messenger_held(m)) hold(m);
    else maybe_resume(m);
}

const cp_chan *cp_messenger_fullest(const cp_messenger *m)
{
    const cp_chan *best = NULL;
    for (int i = 0; i < CP_CHAN_BUCKETS; i++)
        for (const cp_chan *c = m->buckets[i]; c; c = c->next)
            if (c->bytes && (!best || c->bytes > best->bytes)) best = c;
    return best;
}

/* Queue the parsed frame f; block, when not NULL, holds its bytes and is
 * handed to the message. Returns 0, or -1 when the connection broke. */
static int queue_frame(cp_messenger *m, const cp_frame *f, void *block)
{
    double prio = m->arrival_order || f->kind != CP_KIND_DATA ? 0.0 : f->priority;
    cp_pqueue *q = &m->special;
    cp_chan *c = NULL;
    if (f->kind == CP_KIND_DATA) {
        c = cp_messenger_chan(m, f->chan, f->chan_len, 1);
        q = c ? &c->q : NULL;
    }
    cp_msg *msg = NULL;
    if (block) {
        /* a large frame: the message keeps the block it was read into */
        msg = q ? cp_msg_wrap(f->kind, f->flags, prio, block, f->payload, f->payload_len) : (free(block), NULL);
        if (msg && (msg->seq = m->seq + 1, cp_pqueue_push(q, msg))) {
            cp_msg_free(msg);
            msg = NULL;
        }
    } else if (q) {
        msg = cp_pqueue_add(q, f->kind, f->flags, prio, m->seq + 1, f->payload, f->payload_len);
    }
    if (!msg) {
        m->error = "out of memory while queueing a message";
        set_down(m, CP_M_BROKEN);
        return -1;
    }
    m->seq++;
    if (++m->queued > m->queued_max) m->queued_max = m->queued;
    m->queued_bytes += msg_bytes(msg);
    if (c) c->bytes += msg_bytes(msg);
    m->messages_received++;
    g_arrivals++;
    return 0;
}

uint64_t cp_messenger_arrivals(void) { return g_arrivals; }
void cp_messenger_note_progress(void) { g_arrivals++; }

static void frame_error(cp_messenger *m, const char *err)
{
    m->error = err;
    set_down(m, CP_M_BROKEN);
    m->in.start = m->in.len = 0;
}

/* Queue every whole frame at the head of m->in, stopping when the queue
 * goes over its bound (the rest waits in m->in: a read chunk of small
 * frames would otherwise overshoot the bound many times over, since a
 * queued message costs far more than its bytes on the wire). */
static void parse_frames(cp_messenger *m)
{
    for (;;) {
        if (cp_messenger_held(m)) { hold(m); return; }
        cp_frame f;
        const char *err = NULL;
        int rc = cp_frame_parse(cp_buf_head(&m->in), cp_buf_size(&m->in), m->max_frame, &f, &err);
        if (rc == CP_FRAME_NEED_MORE) break;
        if (rc == CP_FRAME_BAD) { frame_error(m, err); return; }
        if (queue_frame(m, &f, NULL)) return;
        cp_buf_consume(&m->in, f.total);
    }
    /* A large frame begun: move it to a block of its own, so the rest is
     * read straight into place and queued without another copy. */
    size_t have = cp_buf_size(&m->in);
    if (have >= CP_FRAME_PREFIX) {
        const unsigned char *p = (const unsigned char *)cp_buf_head(&m->in);
        size_t total = CP_FRAME_PREFIX + (size_t)cp_get_be32(p);
        if (total > CP_BIG_FRAME && total - CP_FRAME_PREFIX <= m->max_frame && begin_big(m, total))
            frame_error(m, "out of memory while reading a large frame");
    }
}

/* Move the large frame of total bytes begun in m->in to a block of its
 * own: the one kept from an earlier frame when it is large enough, else a
 * new one. The header alone proves nothing: a new block starts small and
 * grows as the bytes arrive (grow_big), never past twice what has arrived,
 * so a peer that declares 500 MiB and sends ten bytes costs a megabyte, not
 * 500. Returns 0, or -1 on out of memory. */
static int begin_big(cp_messenger *m, size_t total)
{
    size_t have = cp_buf_size(&m->in);
    size_t want = have * 2 > CP_BIG_STEP ? have * 2 : CP_BIG_STEP;
    if (want > total) want = total;
    big_hdr *b = m->big_spare;
    if (b) {
        g_kept -= b->cap;
        m->big_spare = NULL;
        if (b->cap < want) { free(b); b = NULL; }
    }
    if (!b) {
        b = malloc(sizeof *b + want);
        if (!b) return -1;
        b->cap = want;
        cp_malloc_huge(b, sizeof *b + want);
    }
    m->big = (char *)(b + 1);
    m->big_cap = b->cap < total ? b->cap : total; /* never read past the frame */
    memcpy(m->big, cp_buf_head(&m->in), have);
    m->big_have = have;
    m->big_total = total;
    m->in.start = m->in.len = 0;
    return 0;
}

/* The large frame in m->big is complete: parse and queue it (its message
 * owns the block from now on). */
static void finish_big(cp_messenger *m)
{
    char *frame = m->big;
    size_t total = m->big_total;
    m->big = NULL;
    m->big_have = m->big_cap = m->big_total = 0;
    cp_frame f;
    const char *err = NULL;
    if (cp_frame_parse(frame, total, m->max_frame, &f, &err) != CP_FRAME_OK) {
        free(BIG_HDR(frame));
        frame_error(m, err ? err : "malformed large frame");
        return;
    }
    queue_frame(m, &f, BIG_HDR(frame));
}

/* The large frame's block is full but the frame is not: double it (at
 * most to the frame's size). Returns 0, or -1 on out of memory. */
static int grow_big(cp_messenger *m)
{
    big_hdr *b = BIG_HDR(m->big);
    size_t cap = b->cap * 2;
    if (cap < b->cap || cap > m->big_total) cap = m->big_total;
    b = realloc(b, sizeof *b + cap);
    if (!b) return -1;
    b->cap = cap;
    cp_malloc_huge(b, sizeof *b + cap);
    m->big = (char *)(b + 1);
    m->big_cap = cap;
    return 0;
}

/* Keep block b (a large frame's, used bytes of it, just done with) for m's
 * next large frame, within the bounds of CP_BIG_KEEP. Returns 1 when kept. */
static int keep_block(cp_messenger *m, big_hdr *b, size_t used)
{
    if (m->state != CP_M_OPEN || m->discard || b->cap > m->big_keep) return 0;
    m->big_idle = used < b->cap / 8 ? m->big_idle + 1 : 0;
    if (m->big_idle >= BIG_IDLE_FRAMES) { /* too large for what comes now */
        m->big_idle = 0;
        return 0;
    }
    big_hdr *old = m->big_spare;
    if (old && old->cap >= b->cap) return 0; /* the larger one stays */
    size_t others = g_kept - (old ? old->cap : 0);
    if (others + b->cap > CP_BIG_KEEP_ALL) return 0;
    if (old) free(old);
    m->big_spare = b;
    g_kept = others + b->cap;
    return 1;
}

void cp_messenger_done(cp_messenger *m, cp_msg *msg)
{
    if (!msg) return;
    if (msg->block && keep_block(m, msg->block, msg->len)) msg->block = NULL;
    cp_msg_free(msg);
}

size_t cp_messenger_big_kept(const cp_messenger *m)
{
    return m->big_spare ? ((const big_hdr *)m->big_spare)->cap : 0;
}

/* Draining at exit: read and drop. Returns like read(). */
static ssize_t read_discard(cp_messenger *m)
{
    char scratch[16384];
    m->in.start = m->in.len = 0;
    drop_big(m);
    return m->tp->read(m, scratch, sizeof scratch);
}

/* Returns 1 when it stopped at CP_PUMP_BYTES (more may wait in the
 * socket), else 0. */
static int pump_some(cp_messenger *m)
{
    size_t took = 0; /* bytes of small frames read by this call */
    for (int round = 0; round < 64 && m->state == CP_M_OPEN; round++) {
        /* Only a socket is bounded: its readiness is level-triggered, so
         * the loop calls again while bytes remain. Another transport (MPI)
         * pumps when its data arrives and expects it taken. */
        if (took >= CP_PUMP_BYTES && m->fd >= 0) return 1;
        if (m->discard) {
            ssize_t n = read_discard(m);
            if (n > 0 || (n < 0 && errno == EINTR)) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
            set_down(m, CP_M_EOF);
            return 0;
        }
        /* Over the bound: stop, but never in the middle of a large frame
         * (a single frame larger than the bound is still taken in). */
        if (!m->big && cp_messenger_held(m)) { hold(m); return 0; }
        char *dst;
        size_t room;
        if (m->big) {
            if (m->big_have == m->big_cap && grow_big(m)) {
                frame_error(m, "out of memory while reading a large frame");
                return 0;
            }
            dst = m->big + m->big_have;
            room = m->big_cap - m->big_have;
        } else {
            if (m->in.start && m->in.cap - m->in.len < READ_CHUNK) cp_buf_compact(&m->in);
            if (cp_buf_reserve(&m->in, READ_CHUNK)) {
                frame_error(m, "out of memory while reading");
                return 0;
            }
            dst = m->in.data + m->in.len;
            room = m->in.cap - m->in.len;
        }
        ssize_t n = m->tp->read(m, dst, room);
        if (n > 0) {
            if (m->big) {
                m->big_have += (size_t)n;
                if (m->big_have == m->big_total) finish_big(m);
            } else {
                m->in.len += (size_t)n;
                took += (size_t)n;
                parse_frames(m);
            }
            if ((size_t)n < room) goto drained;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) goto drained;
        /* EOF or a hard error: a partial frame left behind is lost with it. */
        set_down(m, CP_M_EOF);
        return 0;
    }
    return m->state == CP_M_OPEN; /* 64 reads: more may wait */
drained:
    /* The peer is dead and everything it wrote is in (and queued): the
     * connection is over, even if a grandchild still holds the socket. */
    if (m->peer_exited && !cp_messenger_held(m)) set_down(m, CP_M_EOF);
    return 0;
}

void cp_messenger_pump(cp_messenger *m) { pump_some(m); }

/* What the socket holds, as far as the queue's bound allows and at most
 * 4 MiB (the connection is about to go down: what stays in the socket is
 * lost; a peer that writes on and on must not keep us here). */
static void pump_all(cp_messenger *m)
{
    for (int i = 0; i < 16 && pump_some(m); i++) {}
}

static void on_peer_exit(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    cp_messenger *m = w->data;
    ev_io_stop(loop, w);
    close(m->pidfd);
    m->pidfd = -1;
    if (m->peer) cp_proc_poll(m->peer);
    /* Take what it wrote before dying; the pump ends the connection once
     * the socket is drained, which may take several rounds, or wait until
     * the queue is read if it is over its bound. */
    m->peer_exited = 1;
    cp_messenger_pump(m);
}

cp_msg *cp_messenger_pop(cp_messenger *m, cp_chan *c)
{
    cp_msg *msg = c ? cp_pqueue_pop(&c->q) : NULL;
    if (!msg) return NULL;
    m->queued--;
    m->queued_bytes -= msg_bytes(msg);
    c->bytes -= msg_bytes(msg);
    if (msg->flags & CP_FLAG_REPLY) c->replies_received++;
    if (msg->flags & CP_FLAG_REQUEST) c->requests_received++;
    if (!m->reading) maybe_resume(m);
    return msg;
}

cp_msg *cp_messenger_pop_special(cp_messenger *m)
{
    cp_msg *msg = cp_pqueue_pop(&m->special);
    if (!msg) return NULL;
    m->queued--;
    m->queued_bytes -= msg_bytes(msg);
    if (!m->reading) maybe_resume(m);
    return msg;
}

int cp_messenger_exhausted(const cp_messenger *m, const cp_chan *c)
{
    return m->state != CP_M_OPEN && (!c || c->q.n == 0) && m->special.n == 0;
}

int cp_messenger_ready(const cp_messenger *m, const cp_chan *c)
{
    return m->special.n || (c && c->q.n) || m->state != CP_M_OPEN || cp_messenger_held(m);
}

int cp_messenger_ready_any(const cp_messenger *m)
{
    return m->queued || m->state != CP_M_OPEN;
}

struct wait_one { cp_messenger *m; cp_chan *c; int any; };

static int one_ready(void *ud)
{
    struct wait_one *w = ud;
    return w->any ? cp_messenger_ready_any(w->m) : cp_messenger_ready(w->m, w->c);
}

int cp_messenger_wait(cp_messenger *m, cp_chan *c, int any, double timeout)
{
    cp_messenger_flush_all();
    struct wait_one w = {m, c, any};
    return cp_loop_wait(one_ready, &w, timeout);
}

struct wait_many { cp_messenger **ms; int n; };

static int many_ready(void *ud)
{
    struct wait_many *w = ud;
    for (int i = 0; i < w->n; i++)
        if (cp_messenger_ready_any(w->ms[i])) return 1;
    return 0;
}

int cp_messenger_wait_many(cp_messenger **ms, int n, int *ready, double timeout)
{
    cp_messenger_flush_all();
    struct wait_many w = {ms, n};
    int rc = cp_loop_wait(many_ready, &w, timeout);
    if (rc <= 0) return rc;
    int count = 0;
    for (int i = 0; i < n; i++) count += ready[i] = cp_messenger_ready_any(ms[i]) ? 1 : 0;
    return count;
}

/* 1 when /proc says the process is exiting (the kernel's PF_EXITING flag,
 * set before it closes its files) or is a zombie, 0 when it runs, -1 when
 * /proc cannot tell. */
static int proc_exiting(pid_t pid)
{
    char path[48], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    /* After "pid (comm)": state ppid pgrp session tty_nr tpgid flags. */
    const char *p = strrchr(buf, ')');
    char state;
    unsigned long flags;
    if (!p || sscanf(p + 1, " %c %*d %*d %*d %*d %*d %lu", &state, &flags) != 2) return -1;
    return state == 'Z' || state == 'X' || (flags & 0x4ul) ? 1 : 0;
}

int cp_messenger_peer_exited(cp_messenger *m)
{
    cp_proc *p = m->peer;
    if (!p) return 0;
    if (cp_proc_poll(p)) return 1;
    if (m->exit_waited) return 0;
    m->exit_waited = 1;
    /* Exiting: the kernel is past closing its files and about to make it a
     * zombie, so this ends at once unless the machine is overloaded. Not
     * (yet): it closed its end itself, maybe on its way out (os.exit with
     * close = true runs finalisers first), which a short grace covers. */
    int exiting = proc_exiting(p->pid);
    return cp_proc_wait(p, exiting > 0 ? 2.0 : 0.05);
}

cp_buf *cp_messenger_begin(cp_messenger *m, int kind, const char *chan, size_t chan_len,
                           double priority, unsigned flags, size_t *mark)
{
    *mark = cp_frame_begin(&m->out, kind, chan, chan_len, priority, flags);
    return *mark == (size_t)-1 ? NULL : &m->out;
}

int cp_messenger_commit(cp_messenger *m, size_t mark)
{
    return cp_frame_finish(&m->out, mark, m->max_frame);
}

/* A direct send in progress (cp_messenger_commit_direct). */
struct direct { cp_messenger *m; const char *p; size_t n, done; int progress; };

/* Write what the transport takes now: the buffered bytes first (the frame's
 * head among them), then from d->p. On no room, watch for it. */
static void direct_push(struct direct *d)
{
    cp_messenger *m = d->m;
    if (m->state != CP_M_OPEN || (cp_buf_size(&m->out) && cp_messenger_flush_nb(m) != 0)) return;
    while (d->done < d->n) {
        ssize_t k = m->tp->write(m, d->p + d->done, d->n - d->done);
        if (k > 0) { d->done += (size_t)k; d->progress = 1; continue; }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!m->writing) watch(m, m->reading, 1); /* flush_nb stops it again */
            return;
        }
        m->write_errno = k < 0 ? errno : EPIPE;
        cp_messenger_pump(m); /* as flush_nb: keep what the peer sent */
        set_down(m, CP_M_EOF);
        return;
    }
}

static int direct_moved(void *ud)
{
    struct direct *d = ud;
    direct_push(d);
    return d->progress || d->done == d->n || d->m->state != CP_M_OPEN;
}

int cp_messenger_commit_direct(cp_messenger *m, size_t mark, const char *p, size_t n)
{
    size_t len = m->out.len - mark - CP_FRAME_PREFIX + n;
    if (len < n || len > m->max_frame || len > UINT32_MAX) { cp_buf_truncate(&m->out, mark); return -1; }
    cp_put_be32(m->out.data + mark, (uint32_t)len);
    if (m->state != CP_M_OPEN) return -2;
    struct direct d = {m, p, n, 0, 0};
    direct_push(&d);
    while (d.done < n && m->state == CP_M_OPEN) {
        d.progress = 0;
        int rc = cp_loop_wait(direct_moved, &d, CP_DIRECT_WAIT);
        if (rc == 1) continue;
        if (rc < 0) cp_loop_interrupt(); /* for the caller's next wait */
        break;
    }
    if (m->state != CP_M_OPEN) return -2;
    if (d.done < n && cp_buf_append(&m->out, p + d.done, n - d.done)) {
        /* Part of the frame is out: the stream cannot go on. */
        m->error = "out of memory while sending a large message";
        set_down(m, CP_M_BROKEN);
        return -2;
    }
    return 0;
}

void cp_messenger_abort(cp_messenger *m, size_t mark)
{
    cp_buf_truncate(&m->out, mark);
}

int cp_messenger_send_raw(cp_messenger *m, const char *bytes, size_t n)
{
    if (m->state != CP_M_OPEN || cp_buf_append(&m->out, bytes, n)) return -1;
    cp_messenger_flush_nb(m);
    return 0;
}

int cp_messenger_corked(const cp_messenger *m)
{
    return m->state == CP_M_OPEN && cp_buf_size(&m->out) && !m->writing;
}

uint64_t cp_messenger_remaining(const cp_messenger *m)
{
    uint64_t n = 0;
    for (int b = 0; b < CP_CHAN_BUCKETS; b++)
        for (const cp_chan *c = m->buckets[b]; c; c = c->next)
            if (c->requests_sent > c->replies_received) n += c->requests_sent - c->replies_received;
    return n;
}

int cp_messenger_poll(cp_messenger *m, double timeout)
{
    cp_messenger_flush_all();
    if (m->state != CP_M_OPEN) return 0;
    return m->tp->poll(m, timeout);
}
