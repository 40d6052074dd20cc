/* pqueue.h: a priority queue of received messages for one channel.
 *
 * Lower priority value comes out first; among equal priorities, the order of
 * arrival (FIFO). Messages are keyed on (priority, sequence number). The
 * common case, a run of messages of one priority, goes to a ring buffer in
 * O(1) with no comparisons; the rest to a binary heap. pop takes the smaller
 * head of the two. */
#ifndef CP_PQUEUE_H
#define CP_PQUEUE_H

#include <stddef.h>
#include <stdint.h>

/* One received message: header fields and its payload bytes (raw msgpack).
 * Small payloads are copied in after the struct; a large one stays in the
 * block it was read into (no second copy of megabytes). */
typedef struct cp_msg {
    double      priority;
    uint64_t    seq;
    int         kind;
    unsigned    flags;
    size_t      len;
    const char *data;   /* payload: inline below, or inside block */
    void       *block;  /* owned separate allocation, or NULL */
    char        inline_data[];
} cp_msg;

/* Payloads up to CP_MSG_SMALL bytes get a slot of that size (so that their
 * messages can be recycled); larger ones take what they need. */
#define CP_MSG_SMALL 200

/* Bytes a message with a payload of len bytes occupies (header and payload
 * slot, not counting malloc's own bookkeeping or a separate block). */
static inline size_t cp_msg_footprint(size_t len)
{
    return sizeof(cp_msg) + (len <= CP_MSG_SMALL ? CP_MSG_SMALL : len);
}

cp_msg *cp_msg_new(int kind, unsigned flags, double priority, const char *payload, size_t len);
/* A message whose payload lies in block (malloc'd; owned from now on, also
 * on failure). */
cp_msg *cp_msg_wrap(int kind, unsigned flags, double priority, void *block, const char *payload, size_t len);
void    cp_msg_free(cp_msg *m);

typedef struct cp_pqueue {
    cp_msg **heap;          /* binary heap */
    size_t   hn, hcap;
    cp_msg **ring;          /* FIFO run, all of priority ring_prio */
    size_t   rhead, rn, rcap;
    double   ring_prio;
    size_t   n;             /* total */
} cp_pqueue;

#define CP_PQUEUE_INIT {0}

/* Takes ownership of m. Returns 0, or -1 on out of memory (m not taken). */
int     cp_pqueue_push(cp_pqueue *q, cp_msg *m);
/* Removes and returns the first message, or NULL when empty. */
cp_msg *cp_pqueue_pop(cp_pqueue *q);
static inline size_t  cp_pqueue_size(const cp_pqueue *q) { return q->n; }
/* Frees every message and the heap. */
void    cp_pqueue_clear(cp_pqueue *q);

#endif
