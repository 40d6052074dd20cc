/* frame.c: see frame.h. The header is a tiny fixed msgpack shape, so it is
 * read and written by hand here; payloads are left to the codec. */
#include "frame.h"
#include "bigendian.h"

#include <math.h>
#include <string.h>


/* Length of the msgpack value at p if it is a valid channel (nil, bool,
 * int, str), else 0. Needs the bytes to be within n. */
static size_t channel_len(const unsigned char *p, size_t n)
{
    if (n < 1) return 0;
    unsigned c = p[0];
    size_t need;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) return 1;
    if (c >= 0xa0 && c <= 0xbf) need = 1 + (c & 0x1f);
    else switch (c) {
    case 0xcc: case 0xd0: need = 2; break;
    case 0xcd: case 0xd1: need = 3; break;
    case 0xce: case 0xd2: need = 5; break;
    case 0xcf: case 0xd3: need = 9; break;
    case 0xd9: if (n < 2) return 0; need = 2 + p[1]; break;
    default: return 0;
    }
    return need <= n && need <= CP_CHANNEL_MAX + 9 ? need : 0;
}

int cp_frame_parse(const char *buf, size_t avail, size_t max_frame, cp_frame *f, const char **err)
{
    f->total = 0;
    if (avail < CP_FRAME_PREFIX) return CP_FRAME_NEED_MORE;
    uint64_t n = cp_get_be((const unsigned char *)buf, 4);
    if (n > max_frame) { *err = "frame larger than the maximum frame size"; return CP_FRAME_BAD; }
    if (n < 6) { *err = "frame too short for its header"; return CP_FRAME_BAD; }
    f->total = CP_FRAME_PREFIX + (size_t)n;
    if (avail < f->total) return CP_FRAME_NEED_MORE;

    const unsigned char *p = (const unsigned char *)buf + CP_FRAME_PREFIX;
    const unsigned char *end = p + n;
    if (*p++ != 0x95) { *err = "frame is not a 5-element msgpack array"; return CP_FRAME_BAD; }
    if (*p > 0x7f) { *err = "frame kind is not a small integer"; return CP_FRAME_BAD; }
    f->kind = *p++;
    if (f->kind > CP_KIND_MAX) { *err = "unknown frame kind"; return CP_FRAME_BAD; }

    size_t cl = channel_len(p, (size_t)(end - p));
    if (!cl) { *err = "frame channel is not nil, a boolean, an integer or a short string"; return CP_FRAME_BAD; }
    f->chan = (const char *)p;
    f->chan_len = cl;
    p += cl;

    if (p >= end) goto truncated;
    if (*p == 0xc0) { f->priority = INFINITY; p++; }
    else if (*p == 0xcb) {
        if (end - p < 9) goto truncated;
        uint64_t bits = cp_get_be(p + 1, 8);
        double d; memcpy(&d, &bits, 8);
        if (isnan(d)) { *err = "frame priority is NaN"; return CP_FRAME_BAD; }
        f->priority = d; p += 9;
    } else if (*p <= 0x7f) { f->priority = *p++; }
    else if (*p >= 0xe0) { f->priority = (int8_t)*p++; }
    else { *err = "frame priority is not nil, a float or a small integer"; return CP_FRAME_BAD; }

    if (p >= end) goto truncated;
    if (*p > 0x7f) { *err = "frame flags are not a small integer"; return CP_FRAME_BAD; }
    f->flags = *p++;
    if (p >= end) goto truncated;
    f->payload = (const char *)p;
    f->payload_len = (size_t)(end - p);
    return CP_FRAME_OK;
truncated:
    *err = "frame header runs past the frame length";
    return CP_FRAME_BAD;
}

size_t cp_channel_nil(char *out) { out[0] = (char)0xc0; return 1; }
size_t cp_channel_bool(char *out, int b) { out[0] = (char)(b ? 0xc3 : 0xc2); return 1; }

size_t cp_channel_int(char *out, int64_t v)
{
    unsigned char *o = (unsigned char *)out;
    if (v >= 0 && v <= 0x7f) { o[0] = (unsigned char)v; return 1; }
    if (v < 0 && v >= -32) { o[0] = (unsigned char)(int8_t)v; return 1; }
    o[0] = 0xd3;
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++) o[1 + i] = (unsigned char)(u >> (56 - 8 * i));
    return 9;
}

size_t cp_channel_str(char *out, const char *s, size_t n)
{
    if (n > CP_CHANNEL_MAX) return 0;
    unsigned char *o = (unsigned char *)out;
    if (n < 32) { o[0] = (unsigned char)(0xa0 | n); memcpy(o + 1, s, n); return 1 + n; }
    o[0] = 0xd9; o[1] = (unsigned char)n; memcpy(o + 2, s, n);
    return 2 + n;
}

size_t cp_frame_begin(cp_buf *out, int kind, const char *chan, size_t chan_len,
                      double priority, unsigned flags)
{
    size_t mark = out->len;
    if (cp_buf_reserve(out, CP_FRAME_PREFIX + 3 + chan_len + 9 + 64)) return (size_t)-1;
    char *p = out->data + out->len;
    p += CP_FRAME_PREFIX;
    *p++ = (char)0x95;
    *p++ = (char)kind;
    memcpy(p, chan, chan_len); p += chan_len;
    if (isinf(priority) && priority > 0) *p++ = (char)0xc0;
    else {
        uint64_t bits; memcpy(&bits, &priority, 8);
        *p++ = (char)0xcb;
        for (int i = 0; i < 8; i++) *p++ = (char)(bits >> (56 - 8 * i));
    }
    *p++ = (char)(flags & 0x7f);
    out->len = (size_t)(p - out->data);
    return mark;
}

int cp_frame_finish(cp_buf *out, size_t mark, size_t max_frame)
{
    size_t n = out->len - mark - CP_FRAME_PREFIX;
    if (n > max_frame || n > UINT32_MAX) { cp_buf_truncate(out, mark); return -1; }
    cp_put_be32(out->data + mark, (uint32_t)n);
    return 0;
}
