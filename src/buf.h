/* buf.h: a growable byte buffer with a read cursor.
 *
 * Used for outbound frames (append at the end, consume from the front as the
 * socket accepts them) and inbound bytes (append what read() returned, parse
 * whole frames from the front). No Lua here. */
#ifndef CP_BUF_H
#define CP_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct cp_buf {
    char  *data;
    size_t start; /* first unconsumed byte */
    size_t len;   /* end of valid bytes (absolute index into data) */
    size_t cap;
} cp_buf;

#define CP_BUF_INIT {NULL, 0, 0, 0}

void cp_buf_free(cp_buf *b);
/* Make room for n more bytes after len; returns 0 or -1 on out of memory.
 * Never moves start/len, so absolute offsets (marks) stay valid. */
int  cp_buf_reserve(cp_buf *b, size_t n);
int  cp_buf_append(cp_buf *b, const void *p, size_t n);
/* Bytes not yet consumed. */
static inline size_t cp_buf_size(const cp_buf *b) { return b->len - b->start; }
static inline const char *cp_buf_head(const cp_buf *b) { return b->data + b->start; }
/* Drop n bytes from the front; resets to empty (keeping capacity) when drained. */
void cp_buf_consume(cp_buf *b, size_t n);
/* Cut the buffer back to absolute length mark (undo a partial append). */
static inline void cp_buf_truncate(cp_buf *b, size_t mark) { if (mark < b->len) b->len = mark; }
/* Move unconsumed bytes to the front so the tail has room. */
void cp_buf_compact(cp_buf *b);

#endif
