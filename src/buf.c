/* buf.c: see buf.h. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

void cp_buf_free(cp_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->start = b->len = b->cap = 0;
}

void cp_buf_compact(cp_buf *b)
{
    if (b->start == 0) return;
    size_t n = b->len - b->start;
    if (n) memmove(b->data, b->data + b->start, n);
    b->start = 0;
    b->len = n;
}

int cp_buf_reserve(cp_buf *b, size_t n)
{
    if (b->cap - b->len >= n) return 0;
    /* Never compacts: offsets taken before a reserve stay valid (encoders
     * keep marks across appends). Owners call cp_buf_compact at safe points. */
    size_t need = b->len + n;
    if (need < n) return -1; /* overflow */
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int cp_buf_append(cp_buf *b, const void *p, size_t n)
{
    if (cp_buf_reserve(b, n)) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void cp_buf_consume(cp_buf *b, size_t n)
{
    b->start += n;
    if (b->start >= b->len) b->start = b->len = 0;
}
