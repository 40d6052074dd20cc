/* bigendian.h: the big-endian numbers of the wire (frame lengths, msgpack
 * lengths and ints), written and read byte by byte whatever the host's
 * byte order. One copy, used by frame.c, messenger.c and the codec. */
#ifndef CP_BIGENDIAN_H
#define CP_BIGENDIAN_H

#include <stdint.h>

static inline void cp_put_be32(void *out, uint32_t v)
{
    unsigned char *p = out;
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}

/* The n-byte (1..8) big-endian unsigned number at p. */
static inline uint64_t cp_get_be(const void *in, int n)
{
    const unsigned char *p = in;
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

static inline uint32_t cp_get_be32(const void *in) { return (uint32_t)cp_get_be(in, 4); }

#endif
