/* frame.h: the wire frame.
 *
 *   frame = u32 big-endian length N, then N bytes of msgpack:
 *           [kind, channel, priority, flags, payload]
 *
 * The header fields are read here without decoding the payload, which stays
 * as raw msgpack bytes until a receive pops it. See docs/protocol.md. */
#ifndef CP_FRAME_H
#define CP_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include "buf.h"

enum cp_kind {
    CP_KIND_DATA  = 0,  /* an ordinary message */
    CP_KIND_CLOSE = 1,  /* close request: receive raises ResourceRequestedClose */
    CP_KIND_ERROR = 2,  /* the peer's error: receive raises WorkerError */
    CP_KIND_MAX   = 2
};

enum cp_flags {
    CP_FLAG_REQUEST = 1, /* counts towards requests_sent / remaining */
    CP_FLAG_REPLY   = 2  /* counts towards replies_received */
};

#define CP_FRAME_PREFIX 4u
#define CP_FRAME_MAX_DEFAULT (512u << 20) /* 512 MiB */
#define CP_CHANNEL_MAX 255u                /* encoded channel bytes */

typedef struct cp_frame {
    int         kind;
    const char *chan;      /* raw msgpack bytes of the channel value */
    size_t      chan_len;
    double      priority;  /* +inf when absent */
    unsigned    flags;
    const char *payload;   /* raw msgpack bytes of the payload */
    size_t      payload_len;
    size_t      total;     /* bytes of the whole frame including the prefix */
} cp_frame;

enum { CP_FRAME_NEED_MORE = 0, CP_FRAME_OK = 1, CP_FRAME_BAD = -1 };

/* Parse the frame at the start of buf[0..avail). Returns CP_FRAME_OK with f
 * filled, CP_FRAME_NEED_MORE when the frame is not complete yet (f->total is
 * then the full size when known, else 0), or CP_FRAME_BAD with *err set to a
 * static readable reason (oversized, malformed header, unknown kind). */
int cp_frame_parse(const char *buf, size_t avail, size_t max_frame, cp_frame *f, const char **err);

/* Canonical msgpack encoding of a channel value into out[CP_CHANNEL_MAX+9].
 * Returns the byte count, or 0 if too long. */
size_t cp_channel_nil(char *out);
size_t cp_channel_bool(char *out, int b);
size_t cp_channel_int(char *out, int64_t v);
size_t cp_channel_str(char *out, const char *s, size_t n);

/* Start a frame in out: reserves the prefix and writes the header fields.
 * Returns the mark to pass to cp_frame_finish, or (size_t)-1 on OOM. The
 * caller then appends the payload (one msgpack value). */
size_t cp_frame_begin(cp_buf *out, int kind, const char *chan, size_t chan_len,
                      double priority, unsigned flags);
/* Patch the length prefix. Returns 0, or -1 when the frame exceeds max_frame
 * (the frame is then removed from out). */
int cp_frame_finish(cp_buf *out, size_t mark, size_t max_frame);

#endif
