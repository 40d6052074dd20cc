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
 * the next send, and before any wait, receive, poll or close. No Lua here. */
#ifndef CP_MESSENGER_H
#define CP_MESSENGER_H

#include <stdint.h>
#include <sys/types.h>
#include <ev.h>

#include "buf.h"
#include "frame.h"
#include "pqueue.h"
#include "proc.h"

#define CP_CHAN_BUCKETS 32
#define CP_FLUSH_BYTES (64u << 10)
#define CP_CORK_SECONDS 50e-6
#define CP_BIG_FRAME (256u << 10) /* frames above this skip the read buffer */
#define CP_HIGH_WATER (8u << 20) /* a send waits while more is pending */

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
    size_t   keylen;
    char     key[];    /* canonical msgpack bytes of the channel value */
} cp_chan;

typedef struct cp_messenger {
    int         fd;
    int         state;        /* enum cp_mstate */
    int         fifo;         /* MultiMessenger: arrival order only */
    const char *error;        /* reason for CP_M_BROKEN (static string) */
    int         write_errno;  /* errno of a failed write, else 0 */
    size_t      max_frame;
    cp_buf      in, out;
    char       *big;          /* a large frame being read straight into its own block */
    size_t      big_have, big_total;
    double      last_write;   /* cp_now() of the last write attempt */
    unsigned    frames_pending; /* frames appended since out was last empty */
    cp_chan    *buckets[CP_CHAN_BUCKETS];
    cp_chan    *last_chan;    /* lookup cache */
    cp_pqueue   special;      /* CLOSE and ERROR frames jump every queue */
    size_t      queued;       /* messages in all queues (special included) */
    uint64_t    seq;
    uint64_t    messages_sent, messages_received;
    cp_proc    *peer;         /* the worker, on the host side; else NULL */
    pid_t       owner;        /* process that opened it */
    ev_io       rw, ww, pw;   /* readable, writable, peer exit */
    int         pidfd;        /* our own dup of the peer's pidfd, or -1: a
                                 watched fd must outlive its watcher */
    struct cp_messenger *prev, *next; /* every open messenger of the process */
} cp_messenger;

/* Born closed: safe to close or query. */
void cp_messenger_init(cp_messenger *m);
/* Takes fd (made non-blocking). peer may be NULL. Returns 0 or -1. */
int  cp_messenger_open(cp_messenger *m, int fd, int fifo, cp_proc *peer);
/* Idempotent: flush nothing, drop queues, close the fd. */
void cp_messenger_close(cp_messenger *m);
/* In a forked child: close every inherited messenger without touching the
 * parent's loop. */
void cp_messenger_forget_all(void);

/* Channel record for the key bytes; created when create is set (NULL on OOM
 * or when absent). */
cp_chan *cp_messenger_chan(cp_messenger *m, const char *key, size_t len, int create);

/* After the caller appended one whole frame to m->out: count it and apply
 * the coalescing policy. Returns 0, or -1 when the connection is down. */
int  cp_messenger_sent(cp_messenger *m, cp_chan *c, unsigned flags);
/* Write what the socket takes now. Returns bytes still pending, -1 if down. */
long cp_messenger_flush_nb(cp_messenger *m);
/* Block (running the loop, so reads go on) until out is empty. Returns 1,
 * 0 on timeout, -1 interrupted, -2 connection down. */
int  cp_messenger_flush(cp_messenger *m, double timeout);
/* Read what has arrived without blocking and queue whole frames. */
void cp_messenger_pump(cp_messenger *m);

/* Pop the next message of channel c (NULL when none); counts replies. */
cp_msg *cp_messenger_pop(cp_messenger *m, cp_chan *c);
/* Pop a pending CLOSE/ERROR message (NULL when none). */
cp_msg *cp_messenger_pop_special(cp_messenger *m);

/* Nothing more will arrive (EOF, broken or closed) and nothing is queued
 * for channel c (c may be NULL). */
int  cp_messenger_exhausted(const cp_messenger *m, const cp_chan *c);
/* Something to report on channel c: a message, a special, or end of input. */
int  cp_messenger_ready(const cp_messenger *m, const cp_chan *c);
/* Same for any channel. */
int  cp_messenger_ready_any(const cp_messenger *m);
/* Flush every messenger of the process that has pending output. */
void cp_messenger_flush_all(void);

/* Wait until cp_messenger_ready (c) — or, with c NULL and any set, any
 * channel. Flushes pending output first. Returns 1/0/-1 like cp_loop_wait. */
int  cp_messenger_wait(cp_messenger *m, cp_chan *c, int any, double timeout);
/* Wait until at least one of ms[0..n) is ready on any channel; ready[i] set
 * for each. Returns the count ready, 0 on timeout, -1 interrupted. */
int  cp_messenger_wait_many(cp_messenger **ms, int n, int *ready, double timeout);

#endif
