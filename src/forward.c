/* forward.c: see forward.h. */
#include "forward.h"

#include <string.h>

/* The channel of src holding a message (NULL when none). */
static cp_chan *nonempty(cp_messenger *src)
{
    if (src->last_chan && src->last_chan->q.n) return src->last_chan;
    for (int i = 0; i < CP_CHAN_BUCKETS; i++)
        for (cp_chan *c = src->buckets[i]; c; c = c->next)
            if (c->q.n) return c;
    return NULL;
}

int cp_messenger_forward(cp_messenger *dst, cp_messenger *src, size_t max_unsent)
{
    int moved = 0;
    char nil[1];
    size_t nil_len = cp_channel_nil(nil);
    while (cp_messenger_unsent(dst) < max_unsent) {
        if (dst->state != CP_M_OPEN) return -1;
        const char *key = nil;
        size_t keylen = nil_len;
        cp_chan *dc = NULL;
        cp_msg *msg = cp_messenger_pop_special(src);
        if (!msg) {
            cp_chan *c = nonempty(src);
            if (!c) break;
            key = c->key;
            keylen = c->keylen;
            msg = cp_messenger_pop(src, c);
            dc = cp_messenger_chan(dst, key, keylen, 1);
            if (!dc) { cp_msg_free(msg); return -1; }
        }
        size_t mark;
        cp_buf *out = cp_messenger_begin(dst, msg->kind, key, keylen, msg->priority, msg->flags, &mark);
        int bad = !out || cp_buf_append(out, msg->data, msg->len) != 0;
        if (!bad && cp_messenger_commit(dst, mark) != 0) bad = 1;
        else if (bad && out) cp_messenger_abort(dst, mark);
        unsigned flags = msg->flags;
        cp_messenger_done(src, msg);
        if (bad || cp_messenger_sent(dst, dc, flags) != 0) return -1;
        moved++;
    }
    return moved;
}
