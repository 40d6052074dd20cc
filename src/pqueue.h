/* pqueue.h: a priority queue of received messages for one channel.
 *
 * Lower priority value comes out first; among equal priorities, the order of
 * arrival (FIFO). Messages are keyed on (priority, sequence number). The
 * common case, runs of messages of a few priorities, goes to ring buffers
 * (one per priority, CP_PQ_RINGS of them) in O(1) with no comparisons; the
 * rest to a binary heap. pop takes the smallest of their heads. */
#ifndef CP_PQUEUE_H
#define CP_PQUEUE_H

#include <stddef.h>
#include <stdint.h>

struct cp_slab;

/* One received message: header fields and its payload bytes (raw msgpack).
 * Small payloads are copied in after the struct, which lies either in a
 * block of its own or, in a stream, in a slab its queue allocates from; a
 * large one stays in the block it was read into (no second copy of
 * megabytes). */
typedef struct cp_msg {
    double      priority;
    uint64_t    seq;
    int         kind;
    unsigned    flags;
    size_t      len;
    const char *data;   /* payload: inline below, or inside block */
    void       *block;  /* owned separate allocation, or NULL */
    struct cp_slab *slab; /* the slab the message lies in, or NULL */
    char        inline_data[];
} cp_msg;

/* Payloads up to CP_MSG_SMALL bytes get a slot of that size (so that their
 * messages can be recycled); larger ones take what they need. A message in
 * a slab takes only what it needs, so this footprint is an upper bound. */
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

/* A stream of small messages of one priority (a ring below) is stored in
 * slabs: a message is carved from its ring's current slab, which counts its
 * live messages; the ring hands them out in the order they were carved, so
 * a slab empties from its front and is reused (current) or recycled (older)
 * once its last message is freed. No malloc per message, and the memory a
 * stream touches stays small and warm. A ring's first slab is small and they
 * double up to CP_SLAB_MAX, so a queue of a few messages costs little more
 * than separate blocks. */
#define CP_SLAB_MIN (1u << 10)
#define CP_SLAB_MAX (64u << 10)
#define CP_SLAB_MSG_MAX 256      /* larger payloads get blocks of their own */
#define CP_SLAB_AFTER 8          /* a ring starts a slab once it holds this many */
#define CP_PQ_RINGS 4            /* priorities with a ring of their own at once */

typedef struct cp_ring {
    cp_msg **v;             /* FIFO run, all of priority prio (power-of-two size) */
    size_t   head, n, cap;
    double   prio;
    struct cp_slab *slab;   /* the slab its new messages are carved from, or NULL */
} cp_ring;

typedef struct cp_pqueue {
    cp_msg **heap;          /* binary heap: priorities without a ring */
    size_t   hn, hcap;
    cp_ring  rings[CP_PQ_RINGS];
    size_t   n;             /* total */
} cp_pqueue;

#define CP_PQUEUE_INIT {0}

/* Takes ownership of m. Returns 0, or -1 on out of memory (m not taken). */
int     cp_pqueue_push(cp_pqueue *q, cp_msg *m);
/* A new message with a copy of payload, stored where q wants it (a slab
 * for a stream, else a block of its own), pushed with sequence number seq.
 * Returns it (still owned by q), or NULL on out of memory. */
cp_msg *cp_pqueue_add(cp_pqueue *q, int kind, unsigned flags, double priority, uint64_t seq,
                      const char *payload, size_t len);
/* Removes and returns the first message, or NULL when empty. */
cp_msg *cp_pqueue_pop(cp_pqueue *q);
static inline size_t  cp_pqueue_size(const cp_pqueue *q) { return q->n; }
/* Frees every message and the heap; the slab goes once the messages still
 * held by callers are freed. */
void    cp_pqueue_clear(cp_pqueue *q);

#endif
