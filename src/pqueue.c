/* pqueue.c: see pqueue.h. */
#include "pqueue.h"

#include <stdlib.h>
#include <string.h>

cp_msg *cp_msg_new(int kind, unsigned flags, double priority, const char *payload, size_t len)
{
    cp_msg *m = malloc(sizeof *m + len);
    if (!m) return NULL;
    m->priority = priority;
    m->seq = 0;
    m->kind = kind;
    m->flags = flags;
    m->len = len;
    if (len) memcpy(m->data, payload, len);
    return m;
}

void cp_msg_free(cp_msg *m) { free(m); }

static int before(const cp_msg *a, const cp_msg *b)
{
    if (a->priority != b->priority) return a->priority < b->priority;
    return a->seq < b->seq;
}

int cp_pqueue_push(cp_pqueue *q, cp_msg *m)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        cp_msg **h = realloc(q->heap, cap * sizeof *h);
        if (!h) return -1;
        q->heap = h;
        q->cap = cap;
    }
    size_t i = q->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(m, q->heap[parent])) break;
        q->heap[i] = q->heap[parent];
        i = parent;
    }
    q->heap[i] = m;
    return 0;
}

cp_msg *cp_pqueue_pop(cp_pqueue *q)
{
    if (!q->n) return NULL;
    cp_msg *top = q->heap[0];
    cp_msg *last = q->heap[--q->n];
    size_t i = 0, n = q->n;
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

void cp_pqueue_clear(cp_pqueue *q)
{
    for (size_t i = 0; i < q->n; i++) cp_msg_free(q->heap[i]);
    free(q->heap);
    q->heap = NULL;
    q->n = q->cap = 0;
}
