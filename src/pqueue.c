/* pqueue.c: see pqueue.h. */
#include "pqueue.h"

#include <stdlib.h>
#include <string.h>

/* Small messages are recycled through a per-process free list: a stream
 * of small messages would otherwise pay a malloc and a free for each. */
#define FREE_LIST_MAX 1024
static cp_msg *free_list;   /* linked through ->data */
static size_t free_count;

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

static int ring_push(cp_pqueue *q, cp_msg *m)
{
    if (q->rn == q->rcap) {
        size_t cap = q->rcap ? q->rcap * 2 : 16;
        cp_msg **r = malloc(cap * sizeof *r);
        if (!r) return -1;
        for (size_t i = 0; i < q->rn; i++) r[i] = q->ring[(q->rhead + i) & (q->rcap - 1)];
        free(q->ring);
        q->ring = r;
        q->rcap = cap;
        q->rhead = 0;
    }
    q->ring[(q->rhead + q->rn) & (q->rcap - 1)] = m;
    q->rn++;
    return 0;
}

int cp_pqueue_push(cp_pqueue *q, cp_msg *m)
{
    int rc;
    if (q->rn == 0) {
        q->ring_prio = m->priority;
        rc = ring_push(q, m);
    } else if (m->priority == q->ring_prio) {
        rc = ring_push(q, m);   /* same priority, later arrival: FIFO order holds */
    } else {
        rc = heap_push(q, m);
    }
    if (rc == 0) q->n++;
    return rc;
}

cp_msg *cp_pqueue_pop(cp_pqueue *q)
{
    if (!q->n) return NULL;
    cp_msg *m;
    if (q->rn && (!q->hn || before(q->ring[q->rhead], q->heap[0]))) {
        m = q->ring[q->rhead];
        q->rhead = (q->rhead + 1) & (q->rcap - 1);
        q->rn--;
    } else {
        m = heap_pop(q);
    }
    q->n--;
    return m;
}

void cp_pqueue_clear(cp_pqueue *q)
{
    for (size_t i = 0; i < q->hn; i++) cp_msg_free(q->heap[i]);
    for (size_t i = 0; i < q->rn; i++) cp_msg_free(q->ring[(q->rhead + i) & (q->rcap - 1)]);
    free(q->heap);
    free(q->ring);
    memset(q, 0, sizeof *q);
}
