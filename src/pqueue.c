/* pqueue.c: see pqueue.h. */
#include "pqueue.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Small messages are recycled through a per-process free list: a stream
 * of small messages would otherwise pay a malloc and a free for each. */
#define FREE_LIST_MAX 1024
static cp_msg *free_list;   /* linked through ->data */
static size_t free_count;

/* A slab: messages carved one after the other from mem. owner is the ring
 * still carving from it (NULL once retired: it goes when live reaches 0). */
typedef struct cp_slab {
    size_t     live;       /* messages carved and not yet freed */
    size_t     used, cap;  /* bytes of mem carved, and its size */
    cp_ring   *owner;
    struct cp_slab *next;  /* in the spare list */
    _Alignas(max_align_t) char mem[];
} cp_slab;

/* Retired full-size slabs kept for the next stream (at most SPARE_MAX). */
#define SPARE_MAX 16
static cp_slab *spare;
static size_t spare_count;

static cp_slab *slab_get(size_t cap)
{
    cp_slab *s;
    if (cap == CP_SLAB_MAX && spare) {
        s = spare;
        spare = s->next;
        spare_count--;
    } else {
        s = malloc(sizeof *s + cap);
        if (!s) return NULL;
        s->cap = cap;
    }
    s->live = s->used = 0;
    s->owner = NULL;
    s->next = NULL;
    return s;
}

static void slab_put(cp_slab *s)
{
    if (s->cap == CP_SLAB_MAX && spare_count < SPARE_MAX) {
        s->next = spare;
        spare = s;
        spare_count++;
        return;
    }
    free(s);
}

/* The last message of a slab is gone: reuse it from the start while its
 * ring still carves from it, else let it go. */
static void slab_release(cp_slab *s)
{
    if (--s->live) return;
    if (s->owner) s->used = 0;
    else slab_put(s);
}

static inline size_t carve_size(size_t len)
{
    size_t a = _Alignof(max_align_t);
    return (sizeof(cp_msg) + len + a - 1) & ~(a - 1);
}

/* Room for a message of len payload bytes in r's slab, a fresh slab when
 * the current one is full (twice its size, at most CP_SLAB_MAX). NULL on
 * out of memory. */
static cp_msg *carve(cp_ring *r, size_t len)
{
    size_t need = carve_size(len);
    cp_slab *s = r->slab;
    if (!s || s->cap - s->used < need) {
        size_t cap = s ? s->cap * 2 : CP_SLAB_MIN;
        if (cap > CP_SLAB_MAX) cap = CP_SLAB_MAX;
        cp_slab *fresh = slab_get(cap);
        if (!fresh) return NULL;
        if (s) {
            s->owner = NULL;
            if (!s->live) slab_put(s);
        }
        fresh->owner = r;
        r->slab = s = fresh;
    }
    cp_msg *m = (cp_msg *)(void *)(s->mem + s->used);
    s->used += need;
    s->live++;
    m->slab = s;
    return m;
}

static void fill(cp_msg *m, int kind, unsigned flags, double priority, void *block,
                 const char *data, size_t len)
{
    m->priority = priority;
    m->seq = 0;
    m->kind = kind;
    m->flags = flags;
    m->len = len;
    m->block = block;
    m->data = data;
    m->slab = NULL;
}

cp_msg *cp_msg_new(int kind, unsigned flags, double priority, const char *payload, size_t len)
{
    cp_msg *m;
    if (len <= CP_MSG_SMALL && free_list) {
        m = free_list;
        free_list = (cp_msg *)(void *)m->data;
        free_count--;
    } else {
        m = malloc(sizeof *m + (len <= CP_MSG_SMALL ? CP_MSG_SMALL : len));
        if (!m) return NULL;
    }
    fill(m, kind, flags, priority, NULL, m->inline_data, len);
    if (len) memcpy(m->inline_data, payload, len);
    return m;
}

cp_msg *cp_msg_wrap(int kind, unsigned flags, double priority, void *block, const char *payload, size_t len)
{
    cp_msg *m = malloc(sizeof *m);
    if (!m) { free(block); return NULL; }
    fill(m, kind, flags, priority, block, payload, len);
    return m;
}

void cp_msg_free(cp_msg *m)
{
    if (!m) return;
    if (m->slab) { slab_release(m->slab); return; }
    if (!m->block && m->len <= CP_MSG_SMALL && free_count < FREE_LIST_MAX) {
        m->data = (const char *)(void *)free_list;
        free_list = m;
        free_count++;
        return;
    }
    free(m->block);
    free(m);
}

static int before(const cp_msg *a, const cp_msg *b)
{
    if (a->priority != b->priority) return a->priority < b->priority;
    return a->seq < b->seq;
}

static int heap_push(cp_pqueue *q, cp_msg *m)
{
    if (q->hn == q->hcap) {
        size_t cap = q->hcap ? q->hcap * 2 : 16;
        cp_msg **h = realloc(q->heap, cap * sizeof *h);
        if (!h) return -1;
        q->heap = h;
        q->hcap = cap;
    }
    size_t i = q->hn++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(m, q->heap[parent])) break;
        q->heap[i] = q->heap[parent];
        i = parent;
    }
    q->heap[i] = m;
    return 0;
}

static cp_msg *heap_pop(cp_pqueue *q)
{
    cp_msg *top = q->heap[0];
    cp_msg *last = q->heap[--q->hn];
    size_t i = 0, n = q->hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(q->heap[c + 1], q->heap[c])) c++;
        if (!before(q->heap[c], last)) break;
        q->heap[i] = q->heap[c];
        i = c;
    }
    if (n) q->heap[i] = last;
    return top;
}

static int ring_push(cp_ring *r, cp_msg *m)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        cp_msg **v = malloc(cap * sizeof *v);
        if (!v) return -1;
        for (size_t i = 0; i < r->n; i++) v[i] = r->v[(r->head + i) & (r->cap - 1)];
        free(r->v);
        r->v = v;
        r->cap = cap;
        r->head = 0;
    }
    r->v[(r->head + r->n) & (r->cap - 1)] = m;
    r->n++;
    return 0;
}

/* The ring a message of this priority joins: the one holding that priority,
 * else an empty one (taking the priority), else NULL (the heap). */
static cp_ring *ring_for(cp_pqueue *q, double priority)
{
    cp_ring *empty = NULL;
    for (int i = 0; i < CP_PQ_RINGS; i++) {
        cp_ring *r = &q->rings[i];
        if (r->n) {
            if (r->prio == priority) return r;
        } else if (!empty) {
            empty = r;
        }
    }
    if (empty) empty->prio = priority;
    return empty;
}

/* Push m to ring r (NULL: the heap). */
static int push_to(cp_pqueue *q, cp_ring *r, cp_msg *m)
{
    int rc = r ? ring_push(r, m) : heap_push(q, m);
    if (rc == 0) q->n++;
    return rc;
}

cp_msg *cp_pqueue_add(cp_pqueue *q, int kind, unsigned flags, double priority, uint64_t seq,
                      const char *payload, size_t len)
{
    cp_ring *r = ring_for(q, priority);
    cp_msg *m;
    if (r && len <= CP_SLAB_MSG_MAX && (r->slab || r->n + 1 >= CP_SLAB_AFTER)) {
        m = carve(r, len);
        if (!m) return NULL;
        cp_slab *s = m->slab;
        fill(m, kind, flags, priority, NULL, m->inline_data, len);
        m->slab = s;
        if (len) memcpy(m->inline_data, payload, len);
    } else {
        m = cp_msg_new(kind, flags, priority, payload, len);
        if (!m) return NULL;
    }
    m->seq = seq;
    if (push_to(q, r, m)) {
        cp_msg_free(m);
        return NULL;
    }
    return m;
}

int cp_pqueue_push(cp_pqueue *q, cp_msg *m)
{
    return push_to(q, ring_for(q, m->priority), m);
}

cp_msg *cp_pqueue_pop(cp_pqueue *q)
{
    if (!q->n) return NULL;
    /* the smallest head: of the rings (each in order) and of the heap */
    cp_ring *best = NULL;
    cp_msg *m = q->hn ? q->heap[0] : NULL;
    for (int i = 0; i < CP_PQ_RINGS; i++) {
        cp_ring *r = &q->rings[i];
        if (r->n && (!m || before(r->v[r->head], m))) {
            best = r;
            m = r->v[r->head];
        }
    }
    if (best) {
        best->head = (best->head + 1) & (best->cap - 1);
        best->n--;
    } else {
        m = heap_pop(q);
    }
    q->n--;
    return m;
}

void cp_pqueue_clear(cp_pqueue *q)
{
    for (size_t i = 0; i < q->hn; i++) cp_msg_free(q->heap[i]);
    free(q->heap);
    for (int k = 0; k < CP_PQ_RINGS; k++) {
        cp_ring *r = &q->rings[k];
        for (size_t i = 0; i < r->n; i++) cp_msg_free(r->v[(r->head + i) & (r->cap - 1)]);
        free(r->v);
        if (r->slab) {
            r->slab->owner = NULL;
            if (!r->slab->live) slab_put(r->slab);
        }
    }
    memset(q, 0, sizeof *q);
}
