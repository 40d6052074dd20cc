/* messenger.h: one end of a worker connection.
 *
 * Frames go out through a non-blocking outbound buffer and come in through
 * the process's libev loop into per-channel priority queues. While any
 * messenger of a process waits, every messenger keeps reading and writing,
 * so two sides sending large values to each other never deadlock.
 *
 * Small sends made in quick succession are coalesced: a send goes out at
 * once unless another write happened less than CP_CORK_SECONDS ago; the
 * buffered tail goes out at CP_FLUSH_BYTES, when the cork time has passed at
 * the next send, and before any wait, receive, poll or close. A sender that
 * goes on computing instead must not hold its tail back: while
 * cp_messenger_corked() is true, the binding arms a one-shot hook that
 * flushes after CP_FLUSH_HOOK_COUNT more VM instructions.
 *
 * Limits (see docs/protocol.md): a send waits for room only before its frame
 * is appended, never after, so a message is queued whole or not at all; the
 * bytes queued for reading are bounded by max_queued, past which the socket
 * is no longer read (back-pressure on the peer); a large frame's buffer grows
 * as its bytes arrive.
 *
 * The bytes travel over a transport (transport.h): a socketpair by default
 * (cp_messenger_open), or any other (cp_messenger_open_transport: MPI); all
 * of the above holds on every transport. No Lua here. */
#ifndef CP_MESSENGER_H
#define CP_MESSENGER_H

#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <ev.h>

#include "buf.h"
#include "frame.h"
#include "pqueue.h"
#include "proc.h"
#include "transport.h"

#define CP_CHAN_BUCKETS 32
#define CP_FLUSH_BYTES (64u << 10)
#define CP_CORK_SECONDS 50e-6
#define CP_FLUSH_HOOK_COUNT 20000 /* VM instructions a corked tail may wait */
#define CP_BIG_FRAME (256u << 10) /* frames above this skip the read buffer */
#define CP_HIGH_WATER (8u << 20) /* a send waits while more is pending */
#define CP_MAX_QUEUED_DEFAULT (64u << 20) /* bytes queued for reading */
#define CP_BIG_STEP (1u << 20)   /* first buffer of a large frame */
/* Bytes of small frames one pump reads from a socket at most: the rest
 * stays in the socket (still readable, so the loop pumps again), which keeps
 * what one wake-up queues small and lets the socket push back on the sender. */
#define CP_PUMP_BYTES (256u << 10)
/* A messenger keeps the block of its last large frame, once the message is
 * done with (cp_messenger_done), for the next one: a large frame then lands
 * in memory already paged in (a fresh page costs 15-18 us on some VMs). One
 * block per messenger, of at most big_keep bytes (default CP_BIG_KEEP), and
 * at most CP_BIG_KEEP_ALL bytes kept by all messengers of a process. It
 * is freed when the connection goes down or the messenger closes, and after
 * 8 frames in a row that used less than an eighth of it. */
#define CP_BIG_KEEP (128u << 20)
#define CP_BIG_KEEP_ALL (256u << 20)
/* What one queued message costs besides its footprint (cp_msg_footprint):
 * malloc's bookkeeping and its slot in the queue, which may double. */
#define CP_MSG_OVERHEAD 32u

enum cp_mstate {
    CP_M_CLOSED = 0, /* never opened, or closed: fd is -1 */
    CP_M_OPEN,       /* connected */
    CP_M_EOF,        /* peer closed or died; queued messages remain */
    CP_M_BROKEN      /* a malformed frame arrived; connection dropped */
};

typedef struct cp_chan {
    struct cp_chan *next;
    cp_pqueue q;
    uint64_t requests_sent, replies_received;
    uint64_t requests_received, replies_sent;
    size_t   bytes;    /* queued messages, counted as in cp_messenger.queued_bytes */
    size_t   keylen;
    char     key[];    /* canonical msgpack bytes of the channel value */
} cp_chan;

typedef struct cp_messenger {
    const cp_transport *tp;   /* NULL while closed */
    void       *tctx;         /* the transport's own state (not the socket's) */
    int         reading, writing; /* what the transport is asked to watch */
    int         fd;           /* the socket transport's descriptor, else -1 */
    int         state;        /* enum cp_mstate */
    int         arrival_order; /* MultiMessenger: priorities ignored, arrival order only */
    const char *error;        /* reason for CP_M_BROKEN (static string) */
    int         write_errno;  /* errno of a failed write, else 0 */
    size_t      max_frame;
    size_t      max_queued;   /* reading stops while queued_bytes exceeds it (SIZE_MAX: never) */
    size_t      queued_bytes; /* footprint + CP_MSG_OVERHEAD of every queued message */
    double      send_timeout; /* longest wait for room in a send, < 0: no limit */
    cp_buf      in, out;
    char       *big;          /* a large frame being read straight into its own block */
    size_t      big_have, big_cap, big_total;
    void       *big_spare;    /* the block kept for the next large frame, or NULL */
    size_t      big_keep;     /* largest block kept (CP_BIG_KEEP; 0: none) */
    unsigned    big_idle;     /* frames in a row that used little of the kept block */
    double      last_write;   /* cp_now() of the last write attempt */
    unsigned    frames_pending; /* frames appended since out was last empty */
    cp_chan    *buckets[CP_CHAN_BUCKETS];
    cp_chan    *last_chan;    /* lookup cache */
    cp_pqueue   special;      /* CLOSE and ERROR frames jump every queue */
    size_t      queued;       /* messages in all queues (special included) */
    size_t      queued_max;   /* high-water mark of queued (tests, tuning) */
    uint64_t    seq;
    uint64_t    messages_sent, messages_received;
    cp_proc    *peer;         /* the worker, on the host side; else NULL */
    pid_t       owner;        /* process that opened it */
    ev_io       rw, ww;       /* the socket transport's: readable, writable */
    ev_io       pw;           /* peer exit */
    int         pidfd;        /* our own dup of the peer's pidfd, or -1: a
                                 watched fd must outlive its watcher */
    int         peer_exited;  /* the peer died while reading was held back:
                                 the connection ends once the socket is drained */
    int         exit_waited;  /* cp_messenger_peer_exited waited once already */
    int         discard;      /* draining at exit: read and drop what arrives */
    struct cp_messenger *prev, *next; /* every open messenger of the process */
} cp_messenger;

/* Born closed: safe to close or query. */
void cp_messenger_init(cp_messenger *m);
/* Takes fd (made non-blocking). arrival_order: queue by arrival only (a
 * MultiMessenger). peer may be NULL. Returns 0 or -1. */
int  cp_messenger_open(cp_messenger *m, int fd, int arrival_order, cp_proc *peer);
/* The same over transport tp with its state ctx (owned by the transport
 * from now on: tp->close releases it, also when this fails). 0 or -1. */
int  cp_messenger_open_transport(cp_messenger *m, const cp_transport *tp, void *ctx, int arrival_order);
/* How the peer of a host-side end is named in messages ("rank 3"), or NULL
 * (socket: a worker is named by its pid, m->peer). */
static inline const char *cp_messenger_label(const cp_messenger *m)
{
    return m->tp && m->tp->label ? m->tp->label(m) : NULL;
}
/* Idempotent: flush nothing, drop queues, close the fd. */
void cp_messenger_close(cp_messenger *m);
/* In a forked child: close every inherited messenger without touching the
 * parent's loop. */
void cp_messenger_forget_all(void);

/* Channel record for the key bytes; created when create is set (NULL on OOM
 * or when absent). */
cp_chan *cp_messenger_chan_lookup(cp_messenger *m, const char *key, size_t len, int create);
/* The same, inline for the commonest case: the channel of the last lookup
 * (every send and receive, and every frame queued, looks one up). */
static inline cp_chan *cp_messenger_chan(cp_messenger *m, const char *key, size_t len, int create)
{
    cp_chan *c = m->last_chan;
    if (c && c->keylen == len && (len == 0 || (c->key[0] == key[0] && !memcmp(c->key, key, len))))
        return c;
    return cp_messenger_chan_lookup(m, key, len, create);
}

/* Results of the waits below besides 1 (done), 0 (timed out) and -1
 * (interrupted). */
enum { CP_WAIT_DOWN = -2, CP_WAIT_HELD = -3 };

/* Before appending a frame: make sure there is room for it. Returns 1 when
 * no more than CP_HIGH_WATER bytes are pending (at once, or after waiting,
 * reading meanwhile, until half of that has drained), 0 when timeout (< 0:
 * none) passed first, -1 interrupted, CP_WAIT_DOWN when the connection is
 * down, CP_WAIT_HELD when reading is held back (cp_messenger_held): the
 * peer may itself be waiting for us to read, so waiting could last forever. */
int  cp_messenger_room(cp_messenger *m, double timeout);
/* Sending one frame: begin writes its header into the outbound buffer and
 * returns the buffer the caller appends the payload to (one msgpack value),
 * with *mark set (NULL on out of memory); then commit finishes it (returns
 * -1, the frame removed, when it exceeds max_frame) or abort removes it. */
cp_buf *cp_messenger_begin(cp_messenger *m, int kind, const char *chan, size_t chan_len,
                           double priority, unsigned flags, size_t *mark);
int  cp_messenger_commit(cp_messenger *m, size_t mark);
/* Commit a frame whose payload ends with the n bytes at p, which are not
 * in the buffer: they are written straight from p (no copy of megabytes),
 * waiting, with every messenger reading and writing meanwhile, for as long
 * as the transport keeps taking them, at most CP_DIRECT_WAIT seconds
 * without progress; only what is left then (a peer that is not reading) is
 * copied into the outbound buffer. p must stay valid until this returns
 * (the binding: a Lua string on the stack). An interrupt ends the wait and
 * is left for the next one. Returns 0, -1 when the frame exceeds max_frame
 * (removed), or -2 when the connection is down. */
int  cp_messenger_commit_direct(cp_messenger *m, size_t mark, const char *p, size_t n);
#define CP_DIRECT_MIN CP_BIG_FRAME /* a string sent from where it is */
#define CP_DIRECT_WAIT 2e-3
void cp_messenger_abort(cp_messenger *m, size_t mark);
/* After a commit: apply the coalescing policy (a non-blocking write at
 * most, never a wait) and count the frame. Returns 0, or -1 when the
 * connection is down (the frame is not counted). */
int  cp_messenger_sent(cp_messenger *m, cp_chan *c, unsigned flags);
/* Append bytes as they are (tests that send malformed frames). 0 or -1. */
int  cp_messenger_send_raw(cp_messenger *m, const char *bytes, size_t n);
/* Output is pending and nothing drains it (the transport is not watching
 * for room): someone must flush it later (see the cork policy above). */
int  cp_messenger_corked(const cp_messenger *m);
/* Write what the socket takes now. Returns bytes still pending, -1 if down. */
long cp_messenger_flush_nb(cp_messenger *m);
/* Bytes sent but not yet written to the socket. */
static inline size_t cp_messenger_unsent(const cp_messenger *m) { return cp_buf_size(&m->out); }
/* Block (running the loop, so reads go on) until out is empty. Returns 1,
 * 0 on timeout, -1 interrupted, CP_WAIT_DOWN, or CP_WAIT_HELD (as for
 * cp_messenger_room). */
int  cp_messenger_flush(cp_messenger *m, double timeout);
/* At exit: write what is pending for at most timeout seconds, reading and
 * dropping whatever arrives (nobody will read it), so the peer's own sends
 * cannot stall us. Returns like cp_messenger_flush (never CP_WAIT_HELD). */
int  cp_messenger_drain(cp_messenger *m, double timeout);
/* Read what has arrived without blocking and queue whole frames (none while
 * reading is held back): on a socket, at most about CP_PUMP_BYTES of small
 * frames per call (a large frame's bytes are not counted); whatever is left
 * stays in the socket, which then is still readable. Every whole frame read is
 * queued unless the queue is over its bound (cp_messenger_held). */
void cp_messenger_pump(cp_messenger *m);

/* Reading is held back: more than max_queued bytes are queued. */
static inline int cp_messenger_held(const cp_messenger *m)
{
    return m->state == CP_M_OPEN && m->queued_bytes > m->max_queued && !m->discard;
}
/* Change the bound on queued bytes (SIZE_MAX: none); reading resumes at once
 * if the queue is now within it. */
void cp_messenger_set_max_queued(cp_messenger *m, size_t n);
/* The channel whose queue holds the most bytes (NULL when none holds any). */
const cp_chan *cp_messenger_fullest(const cp_messenger *m);

/* Host side, once the connection is down: has the worker exited? Reaps it
 * and returns 1 if so. A worker that dies closes its socket a moment before
 * it can be reaped: when /proc says the process is exiting, wait for that
 * (at most 2 s); otherwise (the worker closed its end and runs on, or /proc
 * cannot tell) wait at most 50 ms. Only the first call on a connection
 * waits; later ones just look. */
int  cp_messenger_peer_exited(cp_messenger *m);

/* Requests sent on any channel that have no reply yet. */
uint64_t cp_messenger_remaining(const cp_messenger *m);
/* A message for channel c (may be NULL) or a CLOSE/ERROR is queued. */
static inline int cp_messenger_has(const cp_messenger *m, const cp_chan *c)
{
    return m->special.n || (c && c->q.n);
}
/* Messages queued on every channel, CLOSE/ERROR included. */
static inline size_t cp_messenger_queued(const cp_messenger *m) { return m->queued; }
/* The seed's pipe_poll: flush, then wait up to timeout seconds (< 0: no
 * limit) for bytes to arrive on the socket itself. 1 readable, 0 not (or
 * not connected). */
int  cp_messenger_poll(cp_messenger *m, double timeout);

/* Pop the next message of channel c (NULL when none); counts replies. */
cp_msg *cp_messenger_pop(cp_messenger *m, cp_chan *c);
/* Pop a pending CLOSE/ERROR message (NULL when none). */
cp_msg *cp_messenger_pop_special(cp_messenger *m);
/* The caller is done with msg, popped from m: frees it, keeping the block
 * of a large frame for m's next one (see CP_BIG_KEEP). msg may be NULL. */
void    cp_messenger_done(cp_messenger *m, cp_msg *msg);
/* Bytes of the block m keeps for its next large frame (0: none). */
size_t  cp_messenger_big_kept(const cp_messenger *m);

/* Nothing more will arrive (EOF, broken or closed) and nothing is queued
 * for channel c (c may be NULL). */
int  cp_messenger_exhausted(const cp_messenger *m, const cp_chan *c);
/* Something to report on channel c: a message, a special, end of input, or
 * reading held back (a wait for c could not end before the queues are read). */
int  cp_messenger_ready(const cp_messenger *m, const cp_chan *c);
/* Same for any channel. */
int  cp_messenger_ready_any(const cp_messenger *m);
/* Flush every messenger of the process that has pending output. */
void cp_messenger_flush_all(void);
/* The same, then wait (reading meanwhile) until every messenger of this
 * process has written what it holds, at most timeout seconds: 1 when all
 * is written (or held back by a peer's bound), 0 on timeout. */
int  cp_messenger_flush_all_wait(double timeout);
/* Messages queued so far by all messengers of the process together, plus
 * connections closed and other progress noted (cp_messenger_note_progress):
 * a foreign loop's adapter compares it across calls to learn that some wait
 * may end (a message read into a queue leaves its socket quiet). */
uint64_t cp_messenger_arrivals(void);
/* Something a wait may be waiting for happened without a message (a pool
 * call ended, a future was cancelled). */
void cp_messenger_note_progress(void);

/* Wait until cp_messenger_ready (c) — or, with c NULL and any set, any
 * channel. Flushes pending output first. Returns 1/0/-1 like cp_loop_wait. */
int  cp_messenger_wait(cp_messenger *m, cp_chan *c, int any, double timeout);
/* Wait until at least one of ms[0..n) is ready on any channel; ready[i] set
 * for each. Returns the count ready, 0 on timeout, -1 interrupted. */
int  cp_messenger_wait_many(cp_messenger **ms, int n, int *ready, double timeout);

#endif
